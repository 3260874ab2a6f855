"""The public API of meshlearn.runtime is explicit and importable."""

import meshlearn.runtime as runtime


def test_all_names_exist_and_are_unique():
    assert len(runtime.__all__) == len(set(runtime.__all__))
    assert runtime.__all__ == sorted(runtime.__all__)
    for name in runtime.__all__:
        assert getattr(runtime, name) is not None, name


def test_core_names_are_public():
    expected = {"AsyncioRuntime", "run_nodes", "make_tls_contexts", "MAX_DATAGRAM_BYTES", "STAT_KEYS"}
    assert expected <= set(runtime.__all__)


def test_stats_start_at_zero_with_every_documented_key():
    rt = runtime.AsyncioRuntime()
    assert rt.stats == dict.fromkeys(runtime.STAT_KEYS, 0)
    assert {"frames_rejected_auth", "frames_rejected_malformed", "frames_oversized",
            "messages_dropped_unreachable", "datagrams_rejected"} <= set(rt.stats)


def test_executors_package_exports_and_loads_backends_lazily():
    import subprocess
    import sys

    code = ("import sys, meshlearn.executors as ex; lazy = 'torch' in sys.modules; "
            "from meshlearn.executors import VectorizedExecutor, Executor, Handle; "
            "print(lazy, VectorizedExecutor.__module__, sorted(ex.__all__) == ex.__all__, ex.EXECUTORS.names())")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.split(maxsplit=3)
    assert out[:3] == ["False", "meshlearn.executors.vectorized", "True"]
    assert out[3].strip() == "['inline', 'process', 'ray', 'vectorized']"
