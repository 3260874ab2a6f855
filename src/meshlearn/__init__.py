"""meshlearn: learning and inference across machines on unreliable networks.

The top-level namespace holds what a user writing nodes or driving runs needs; subpackages
(`meshlearn.net`, `.wire`, `.fl`, `.data`, `.learn`, `.store`, `.config`, `.experiment`) hold the
rest. Names load on first use, so `import meshlearn` is cheap and never imports torch.

    from meshlearn import load_experiment, run_experiment, RunStore
    run = run_experiment(load_experiment("quickstart"), RunStore("runs"))
"""

import importlib as _importlib

__version__ = "0.1.0"

_WHERE = {
    "AsyncioRuntime": "meshlearn.runtime",
    "AuthError": "meshlearn.errors",
    "ConfigError": "meshlearn.errors",
    "Context": "meshlearn.node",
    "DataError": "meshlearn.errors",
    "FrameCodec": "meshlearn.wire",
    "InlineExecutor": "meshlearn.executors",
    "LinkSpec": "meshlearn.net",
    "MemorySink": "meshlearn.sim.runtime",
    "MeshlearnError": "meshlearn.errors",
    "Message": "meshlearn.wire",
    "Network": "meshlearn.net",
    "Node": "meshlearn.node",
    "PeerError": "meshlearn.errors",
    "ProtocolError": "meshlearn.errors",
    "Registry": "meshlearn.registry",
    "RegistryError": "meshlearn.errors",
    "RunStore": "meshlearn.store",
    "Simulator": "meshlearn.sim.runtime",
    "StoreError": "meshlearn.errors",
    "TensorCodec": "meshlearn.wire",
    "UsageError": "meshlearn.errors",
    "load_experiment": "meshlearn.experiment",
    "run_experiment": "meshlearn.experiment",
}

__all__ = sorted(_WHERE)


def __getattr__(name: str):
    if name in _WHERE:
        value = getattr(_importlib.import_module(_WHERE[name]), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module 'meshlearn' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_WHERE))
