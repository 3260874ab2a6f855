"""Real split inference: `meshlearn split serve` (tail) and `split infer` (head) as two OS processes.

The bar of issue 5: 200 digits samples inferred head→tail over UDP loopback with 30% injected
loss, accuracy within 2 points of the simulated run with the same seed. The injected loss is
keyed on (seed, sample), and loopback loses nothing at this rate, so the tail accepts the same
packets in both runs and the predictions are expected to be identical, not just close.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time

import pytest

from meshlearn.split.channel import encode_packets
from meshlearn.split.packets import TensorChunk
from meshlearn.wire import FrameCodec

pytestmark = pytest.mark.processes
CLI = [sys.executable, "-m", "meshlearn", "split"]


@pytest.fixture(scope="module")
def model_file(tmp_path_factory):
    path = tmp_path_factory.mktemp("split") / "cnn.safetensors"
    subprocess.run([*CLI, "train", "--out", str(path), "--epochs", "10"], check=True, capture_output=True, timeout=120)
    return path


def start_serve(model_file, secret: str, *extra: str) -> tuple[subprocess.Popen, int]:
    """`split serve` on a free loopback port; returns the process and its port once it is ready."""
    env = {**os.environ, "MESHLEARN_SECRET": secret}
    proc = subprocess.Popen([*CLI, "serve", "--model", str(model_file), "--listen", "127.0.0.1:0",
                             "--duration", "120", *extra], env=env, text=True,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    line = proc.stderr.readline()
    while line.startswith("warning: "):  # e.g. a short secret; the ready line comes next
        line = proc.stderr.readline()
    assert "serving the tail" in line, line + proc.stderr.read()
    return proc, int(line.rsplit(":", 1)[1])


def stop_serve(proc: subprocess.Popen) -> dict:
    proc.send_signal(signal.SIGINT)
    out, err = proc.communicate(timeout=30)
    assert proc.returncode in (0, 130, -signal.SIGINT), err
    return json.loads(out.strip().splitlines()[-1])


def infer_proc(model_file, secret: str | None, *args: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "MESHLEARN_SECRET": secret or ""}
    return subprocess.run([*CLI, "infer", "--model", str(model_file), *args], env=env, text=True,
                          capture_output=True, timeout=120)


def error_lines(done: subprocess.CompletedProcess) -> list[str]:
    """The `error:` lines of a command that failed as a usage error (exit 2, nothing on stdout)."""
    assert done.returncode == 2 and done.stdout == "", (done.returncode, done.stdout, done.stderr)
    assert "Traceback" not in done.stderr, done.stderr
    return [line for line in done.stderr.splitlines() if line.startswith("error: ")]


def infer(model_file, secret: str | None, *args: str) -> dict:
    done = infer_proc(model_file, secret, *args)
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout)


@pytest.mark.timeout(240)
def test_udp_inference_with_injected_loss_matches_the_simulation(model_file):
    serve, port = start_serve(model_file, "split-key")
    try:
        real = infer(model_file, "split-key", "--server", f"127.0.0.1:{port}", "--samples", "200", "--loss", "0.3",
                     "--seed", "3")
    finally:
        counters = stop_serve(serve)
    sim = infer(model_file, None, "--simulate", "--samples", "200", "--loss", "0.3", "--seed", "3")
    print(f"udp {real['accuracy_pct']}% vs simulated {sim['accuracy_pct']}%, injected loss "
          f"{real['injected_loss']}, {real['wire_bytes_per_sample']} B/sample, {real['wall_s']} s")
    assert real["samples"] == sim["samples"] == 200
    assert 0.25 < real["injected_loss"] == sim["injected_loss"] < 0.35
    assert abs(real["accuracy_pct"] - sim["accuracy_pct"]) <= 2.0
    assert real["accepted_of_sent"] == 1.0  # loopback lost nothing the head sent
    assert real["predictions"] == sim["predictions"]  # same drops, same tensors, same answers
    assert real["wire_bytes_per_sample"] == sim["wire_bytes_per_sample"]  # the simulator counts real frames
    assert counters["samples"] == real["answered"] and counters["datagrams_rejected"] == 0


@pytest.mark.slow  # the default tier checks Bernoulli loss over UDP against the simulation; this adds bursts
@pytest.mark.timeout(240)
def test_bursty_injected_loss_over_udp_matches_the_simulation(model_file):
    channel = ("--elements", "128", "--order", "sequential")  # 16 packets; bursts wipe whole channel groups
    serve, port = start_serve(model_file, "split-key", *channel)
    loss = ("--samples", "100", "--loss", "0.3", "--burst", "4", "--seed", "5", *channel)
    try:
        real = infer(model_file, "split-key", "--server", f"127.0.0.1:{port}", *loss)
    finally:
        stop_serve(serve)
    sim = infer(model_file, None, "--simulate", *loss)
    assert real["burst"] == sim["burst"] == 4.0 and real["packets"] == 1600
    assert 0.2 < real["injected_loss"] == sim["injected_loss"] < 0.4
    assert real["predictions"] == sim["predictions"] and real["accepted_of_sent"] == 1.0


@pytest.mark.timeout(120)
def test_wrong_secret_and_garbage_datagrams_are_counted_and_ignored(model_file):
    import socket
    import struct

    serve, port = start_serve(model_file, "right-key")
    try:
        started = time.monotonic()
        wrong = infer_proc(model_file, "wrong-key", "--server", f"127.0.0.1:{port}", "--samples", "5",
                           "--reply-timeout", "0.3")
        (error,) = error_lines(wrong)
        assert error.startswith("error: no reply from the server at 127.0.0.1:") and "secret" in error
        assert time.monotonic() - started < 60  # gave up at the first timeout: 4 chunks sent, not 5 samples' 20
        garbage = [b"", b"\x00", b"\xb0" * 40, os.urandom(600)] + [os.urandom(64) for _ in range(6)]
        sealed, stamp = FrameCodec(b"right-key"), struct.Struct(">QQ")  # an insider: it holds the secret
        authentic_but_malformed = sealed.seal("evil", stamp.pack(1, 1) + b"\xb0\x00\x00")  # a chunk with no body
        other_spec = sealed.seal("evil", stamp.pack(1, 2) + TensorChunk(
            12345, encode_packets([1.0, 2.0], _spec(), tag=0)[0]).encode())
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
            for data in [*garbage, authentic_but_malformed, other_spec]:
                s.sendto(data, ("127.0.0.1", port))
        time.sleep(0.5)
        for _ in range(2):  # the tail kept serving, and a second head run is not mistaken for the first
            good = infer(model_file, "right-key", "--server", f"127.0.0.1:{port}", "--samples", "20")
            assert good["answered"] == 20 and good["accuracy_pct"] >= 90
    finally:
        counters = stop_serve(serve)
    # 4 wrong-MAC chunks (the head gave up after its first sample) + 10 garbage datagrams + 1 authentic
    # frame that does not decode
    assert counters["datagrams_rejected"] == 4 + len(garbage) + 1
    assert counters["spec_mismatch"] == 1 and counters["samples"] == 40


@pytest.mark.timeout(120)
def test_infer_with_other_channel_settings_fails_at_once_naming_them(model_file):
    secret = "a-split-key-of-24-bytes!"
    serve, port = start_serve(model_file, secret, "--quant", "uniform", "--bits", "4")
    try:
        started = time.monotonic()
        done = infer_proc(model_file, secret, "--server", f"127.0.0.1:{port}", "--samples", "50",
                          "--quant", "uniform", "--bits", "8", "--reply-timeout", "5")
        took = time.monotonic() - started
    finally:
        counters = stop_serve(serve)
    (error,) = error_lines(done)
    assert error.startswith("error: split channel settings differ from the server's: bits (device 8, server 4)")
    assert "--quant/--bits" in error
    assert took < 30  # not 50 samples x 5 s of silent misses
    assert counters["settings_sent"] == 1 and counters["samples"] == 0 and counters["spec_mismatch"] >= 1


def _spec():
    from meshlearn.split.channel import ChannelSpec

    return ChannelSpec(quant="fp16", elements_per_packet=512)


@pytest.mark.timeout(120)
def test_per_head_keys_answer_the_key_holder_only(model_file, tmp_path):
    secret = "a-cluster-secret-of-32-bytes-ok!"
    env = {**os.environ, "MESHLEARN_SECRET": secret}
    issued = subprocess.run([sys.executable, "-m", "meshlearn", "keys", "issue", "cam-7", "--out", str(tmp_path)],
                            env=env, capture_output=True, text=True)
    assert issued.returncode == 0, issued.stderr
    serve, port = start_serve(model_file, secret, "--client-keys")
    try:
        good = infer(model_file, None, "--server", f"127.0.0.1:{port}", "--samples", "10", "--key-file",
                     str(tmp_path / "cam-7.key"))
        assert good["answered"] == 10
        shared = infer_proc(model_file, secret, "--server", f"127.0.0.1:{port}", "--samples", "2",
                            "--reply-timeout", "0.3")  # the shared secret is no head key here
        assert "no reply from the server" in error_lines(shared)[0]
        wrong = infer_proc(model_file, None, "--server", f"127.0.0.1:{port}", "--key-file",
                           str(tmp_path / "cam-7.key"), "--id", "cam-8")
        assert "is the key of 'cam-7', not of --id 'cam-8'" in error_lines(wrong)[0]
    finally:
        counters = stop_serve(serve)
    assert counters["samples"] == 10 and counters["datagrams_rejected"] >= 1
