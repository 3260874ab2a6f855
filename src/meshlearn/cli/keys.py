"""`meshlearn keys`: make a cluster secret and issue per-client credentials from it.

    meshlearn keys secret cluster.key                         32 random bytes, readable by you only
    meshlearn keys issue client-00 client-01 --secret-file cluster.key --out keys/
    meshlearn serve quickstart --secret-file cluster.key --client-keys         # on the server
    meshlearn join quickstart --key-file keys/client-00.key --server HOST:7070   # on client-00

A credential is derived from the cluster secret and the client id (HKDF-SHA256), so the server
needs no list of issued keys, and a client holding one can prove that id and no other. The
cluster secret itself stays on the server (and on whoever issues keys).
"""

from __future__ import annotations

import secrets
from pathlib import Path
from typing import Optional

import typer

from meshlearn.cli import app
from meshlearn.cli.deploy import SECRET_FILE, read_secret
from meshlearn.errors import UsageError

keys_app = typer.Typer(help="Make a cluster secret and issue per-client key files (see `meshlearn serve "
                            "--client-keys`).", no_args_is_help=True)
app.add_typer(keys_app, name="keys")


@keys_app.command("secret")
def secret_cmd(path: Path = typer.Argument(..., help="Where to write the new cluster secret (must not exist).")) -> None:
    """Write a new random cluster secret (64 hex characters, mode 0600) for --secret-file."""
    from meshlearn.wire.keys import write_private

    write_private(path, secrets.token_hex(32) + "\n")
    typer.echo(f"wrote a new cluster secret to {path}; give it only to the server and whoever issues keys")


@keys_app.command("issue")
def issue_cmd(
    client_ids: list[str] = typer.Argument(..., help="Client ids to issue keys for, e.g. client-00 client-01."),
    out: Path = typer.Option(Path("."), "--out", help="Folder for the key files (ID.key each)."),
    secret_file: Optional[Path] = SECRET_FILE,
) -> None:
    """Write one key file per client id, derived from the cluster secret; hand each to its client only."""
    from meshlearn.wire.keys import node_key, write_key_file

    secret = read_secret(secret_file, insecure=False)
    out.mkdir(parents=True, exist_ok=True)
    for client_id in client_ids:
        if not client_id or "/" in client_id or client_id.startswith("."):
            raise UsageError(f"client id {client_id!r} cannot name a key file; use ids like client-00")
        write_key_file(out / f"{client_id}.key", client_id, node_key(secret, client_id))
        typer.echo(f"{client_id}: {out / f'{client_id}.key'}")

