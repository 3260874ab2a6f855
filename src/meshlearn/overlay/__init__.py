"""meshlearn.overlay: a fault-tolerant overlay of servers, as sans-I/O nodes.

What lives here (techniques-mizutani.md §1, §2, §5):

* ``simnet.py``: the simulation set-up every overlay experiment shares (a network with one
  access link per node, so 10,000 nodes stay cheap; the cluster key on every frame);
* ``swim.py`` + ``swim_packets.py`` + ``swim_config.py``: SWIM membership and failure detection
  with Lifeguard (suspicion with confirmations, local health, piggybacked dissemination);
* ``chord.py``, ``propagation.py``: a Chord ring and failure-information propagation, stateful
  (backpointers) and stateless (targets estimated at detection time);
* ``skipgraph.py``, ``dsml.py``: Skip Graph membership vectors and the Distributed Skip Mesh List
  aggregation hierarchy (two parents per node, no double counting).

Packet type tags (``meshlearn.wire.packet``): SWIM 0x80–0x8F, Chord / propagation 0x90–0x9F,
Skip Graph / DSML 0xA0–0xAF.
"""
