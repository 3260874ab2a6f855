"""Ping-pong over mutual TLS with a self-signed cert made by the openssl CLI."""

from __future__ import annotations

import asyncio
import shutil
import subprocess

import pytest
from rt_helpers import LOCAL, SECRET, Asker, Doubler, Echo, Pinger, Ponger, wire_bytes

from meshlearn.errors import UsageError
from meshlearn.executors import InlineExecutor
from meshlearn.runtime import AsyncioRuntime, make_tls_contexts

pytestmark = [
    pytest.mark.timeout(30),
    pytest.mark.skipif(shutil.which("openssl") is None, reason="needs the openssl CLI"),
]


@pytest.fixture(scope="module")
def tls_files(tmp_path_factory):
    d = tmp_path_factory.mktemp("tls")
    subprocess.run(
        ["openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes",
         "-days", "1", "-keyout", str(d / "key.pem"), "-out", str(d / "cert.pem"), "-subj", "/CN=meshlearn-test",
         "-addext", "subjectAltName=IP:127.0.0.1,DNS:localhost"],
        check=True, capture_output=True, timeout=30,
    )
    return d / "cert.pem", d / "key.pem"


@pytest.mark.parametrize("check_hostname", [False, True])
def test_ping_pong_over_tls(tls_files, check_hostname):
    cert, key = tls_files
    ssl_server, ssl_client = make_tls_contexts(cert, key, cert, check_hostname=check_hostname)
    pinger, ponger = Pinger("client", "server", count=3), Ponger("server")

    async def main():
        server = AsyncioRuntime(listen=(LOCAL, 0), secret=SECRET, ssl_server=ssl_server)
        server.add_node(ponger)
        await server.start()
        client = AsyncioRuntime(peers={"server": server.address}, secret=SECRET, ssl_client=ssl_client,
                                executor=InlineExecutor(Doubler()))
        client.add_node(pinger)
        return await asyncio.gather(server.run(timeout=10), client.run(timeout=10)), client

    (ok_s, ok_c), client = asyncio.run(main())
    assert ok_s and ok_c and pinger.pongs == [0, 1, 2] and ponger.got[-1][1].kind == "t.bye"
    # TLS records wrap the frames; the counters still count frame bytes, as the simulator does
    assert client.context("client").tx_bytes == wire_bytes("client", pinger.sent)


def test_plain_client_cannot_reach_a_tls_listener(tls_files):
    cert, key = tls_files
    ssl_server, _ = make_tls_contexts(cert, key, cert)

    async def main():
        server = AsyncioRuntime(listen=(LOCAL, 0), secret=SECRET, ssl_server=ssl_server)
        server.add_node(Echo("server"))
        await server.start()
        serving = asyncio.ensure_future(server.run(timeout=10))
        plain = AsyncioRuntime(peers={"server": server.address}, secret=SECRET, handshake_timeout=1.0)
        plain.add_node(Asker("plain", "server"))
        assert await plain.run(timeout=1.5) is False
        server.context("server").stop()
        await serving
        return plain

    plain = asyncio.run(main())
    assert plain.stats["messages_dropped_unreachable"] >= 1


def test_make_tls_contexts_reports_missing_files(tmp_path):
    with pytest.raises(UsageError, match="does not exist"):
        make_tls_contexts(tmp_path / "c.pem", tmp_path / "k.pem", tmp_path / "ca.pem")
