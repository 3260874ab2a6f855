"""torch bridges (meshlearn.learn.torchio) and the public API surface of meshlearn.wire."""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest

import meshlearn.wire as wire
from meshlearn.errors import UsageError
from meshlearn.learn import numpy_to_state, state_to_numpy
from meshlearn.wire import Message, TensorCodec, decode_message, encode_message

torch = pytest.importorskip("torch")


def small_net():
    torch.manual_seed(0)
    return torch.nn.Sequential(torch.nn.Linear(4, 3), torch.nn.BatchNorm1d(3), torch.nn.Linear(3, 2))


def test_state_dict_roundtrip_through_the_wire():
    src, dst = small_net(), small_net()
    with torch.no_grad():
        for p in dst.parameters():
            p.zero_()
    arrays = state_to_numpy(src)
    assert arrays["1.num_batches_tracked"].dtype == np.int64
    msg = decode_message(encode_message(Message.make("fl.model", arrays), TensorCodec(compression="zstd")))
    dst.load_state_dict(numpy_to_state(msg.tensors))
    for (k, a), b in zip(src.state_dict().items(), dst.state_dict().values()):
        assert torch.equal(a, b), k


def test_snapshot_is_a_copy_and_bfloat16_widens():
    weight = torch.ones(3)
    arrays = state_to_numpy({"w": weight, "h": torch.ones(2, dtype=torch.bfloat16)})
    weight.add_(1)
    assert arrays["w"].tolist() == [1.0, 1.0, 1.0]
    assert arrays["h"].dtype == np.float32


def test_numpy_to_state_handles_readonly_and_strided_arrays():
    ro = np.arange(6.0).reshape(2, 3)
    ro.flags.writeable = False
    out = numpy_to_state({"ro": ro, "t": ro.T, "be": np.arange(3, dtype=">f4")})
    assert out["t"].shape == (3, 2) and torch.equal(out["t"], torch.tensor(ro.T.copy()))
    assert out["be"].tolist() == [0.0, 1.0, 2.0]


def test_usage_errors():
    with pytest.raises(UsageError):
        state_to_numpy(42)
    with pytest.raises(UsageError):
        state_to_numpy({"x": 1.0})
    with pytest.raises(UsageError):
        state_to_numpy({"c": torch.zeros(2, dtype=torch.complex64)})
    with pytest.raises(UsageError):
        numpy_to_state({"x": [1.0]})


def test_public_api():
    for name in wire.__all__:
        assert hasattr(wire, name), name
    assert {"Message", "TensorCodec", "FrameCodec", "encode_message", "decode_message",
            "save_tensors", "load_tensors"} <= set(wire.__all__)


def test_wire_imports_without_torch():
    code = "import sys; sys.modules['torch'] = None; import meshlearn.wire; print('ok')"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert out.stdout.strip() == "ok", out.stderr
