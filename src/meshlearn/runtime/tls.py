"""TLS for the asyncio runtime's TCP connections: mutual TLS under a cluster CA.

TLS authenticates and encrypts the channel; the frame HMAC (the cluster ``secret``) still
authenticates membership inside it, so both stay on. Every member presents a certificate
signed by ``ca`` and accepts only peers whose certificate chains to it. Host names are not
checked by default: members are usually addressed by IP and share one CA, so the CA is what
identifies them; pass ``check_hostname=True`` when certificates name the hosts (SAN entries).

Make a test CA/cert with the openssl CLI, e.g.::

    openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes -days 365 \
        -keyout key.pem -out cert.pem -subj /CN=meshlearn -addext subjectAltName=IP:127.0.0.1
    # a self-signed cert is its own CA: make_tls_contexts("cert.pem", "key.pem", "cert.pem")
"""

from __future__ import annotations

import os
import ssl

from meshlearn.errors import UsageError

__all__ = ["make_tls_contexts"]


def make_tls_contexts(
    cert: str | os.PathLike, key: str | os.PathLike, ca: str | os.PathLike, *, check_hostname: bool = False
) -> tuple[ssl.SSLContext, ssl.SSLContext]:
    """Return ``(ssl_server, ssl_client)`` for ``AsyncioRuntime``: TLS >= 1.2, peer certs required."""
    for what, path in (("cert", cert), ("key", key), ("ca", ca)):
        if not os.path.isfile(path):
            raise UsageError(f"TLS {what} file {os.fspath(path)!r} does not exist; pass PEM file paths")
    try:
        server = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH, cafile=os.fspath(ca))
        server.verify_mode = ssl.CERT_REQUIRED  # mutual TLS: clients prove membership too
        server.load_cert_chain(os.fspath(cert), os.fspath(key))
        client = ssl.create_default_context(ssl.Purpose.SERVER_AUTH, cafile=os.fspath(ca))
        client.check_hostname = check_hostname
        client.load_cert_chain(os.fspath(cert), os.fspath(key))
    except ssl.SSLError as exc:
        raise UsageError(f"cannot load TLS files (cert={cert}, key={key}, ca={ca}): {exc}; "
                         "they must be PEM and the key must match the cert") from None
    for ctx in (server, client):
        ctx.minimum_version = ssl.TLSVersion.TLSv1_2
    return server, client
