"""meshlearn.overlay: a fault-tolerant overlay of servers, as sans-I/O nodes (drivers kept apart).

Where things live (techniques-mizutani.md §1, §2, §5); this package imports nothing:

* ``swim/``: SWIM membership and failure detection with Lifeguard (suspicion with confirmations,
  local health, piggybacked dissemination). Protocol: ``node.py`` (``SwimNode``), ``packets.py``,
  ``config.py`` (``SwimConfig``, memberlist presets), ``state.py`` (table, probe order, queue).
  Drivers: ``sim.py`` (``simulate_swim``, ``SwimSimSettings``), ``udp.py`` (real members over UDP).
* ``chord/``: a Chord ring and failure-information propagation, stateful (backpointers) and
  stateless (targets estimated at detection time). Protocol: ``node.py`` (``ChordNode``, ring
  arithmetic, ``bootstrap_ring``), ``propagation.py`` (``PropagationNode``, ``PropagationConfig``),
  ``packets.py``. Driver: ``sim.py`` (``simulate_propagation``, ``PropagationSettings``).
* ``skipgraph/``: Skip Graph membership vectors. Protocol: ``node.py`` (``SkipGraphNode``),
  ``upkeep.py`` (keep-alive and repair mixin), ``view.py`` (the converged structure),
  ``packets.py`` (Skip Graph and DSML packets).
* ``dsml/``: the Distributed Skip Mesh List aggregation hierarchy (two parents per node, no double
  counting). Protocol: ``node.py`` (``DsmlNode``). Driver: ``sim.py`` (``simulate_dsml``,
  ``DsmlSettings``). The FL algorithm over it is ``meshlearn.fl.dsml``.
* ``simnet.py``: the simulation set-up every driver shares (a network with one access link per
  node, so 10,000 nodes stay cheap; the cluster key on every frame).
* ``studies.py``: the registry every driver registers its study in; the ``overlay`` experiment kind
  (``meshlearn.experiment.overlay``) runs them from one TOML file.

Layering: protocol modules import only each other, ``meshlearn.node``, ``meshlearn.wire`` and
``meshlearn.errors``; never a driver, the simulator, the asyncio runtime, the store, config or fl
(``tests/overlay/test_layering.py`` checks it).

Packet type tags (``meshlearn.wire.packet``): SWIM 0x80–0x8F, Chord / propagation 0x90–0x9F,
Skip Graph / DSML 0xA0–0xAF.
"""
