"""`meshlearn serve` and `meshlearn join`: FedAvg between real processes on one or many machines.

    machine A:  MESHLEARN_SECRET=... meshlearn serve quickstart --listen 0.0.0.0:7070
    machine B:  MESHLEARN_SECRET=... meshlearn join quickstart --server A:7070 --client-id client-00

Every connection is authenticated under the cluster secret (from $MESHLEARN_SECRET or --secret-file),
with a fresh session key per connection; `serve --client-keys` instead accepts each client only with
its own key file (`meshlearn keys issue`, `join --key-file`), and only ids of the deployment.
--tls-cert/--tls-key/--tls-ca add mutual TLS (encryption). The server stores the run like
`meshlearn run` does, checkpoints every round, and `serve --resume RUN` continues a killed server.
"""

from __future__ import annotations

import errno
import logging
import os
import socket
import sys
from pathlib import Path
from typing import Optional

import typer

from meshlearn.cli import app
from meshlearn.cli.console import RUNS_DIR_HELP
from meshlearn.errors import ConfigError, MeshlearnError, UsageError

SECRET_FILE = typer.Option(None, "--secret-file", help="File holding the cluster secret [default: $MESHLEARN_SECRET].")
INSECURE = typer.Option(False, "--insecure", help="Run without a cluster secret (local experiments only).")
CLIENT_KEYS = typer.Option(False, "--client-keys", help="Accept each client only with its own key file (issued by "
                           "`meshlearn keys issue` from this secret), not with the shared secret.")
KEY_FILE = typer.Option(None, "--key-file", help="This client's own key file (from `meshlearn keys issue`), for a "
                        "server run with --client-keys; replaces the cluster secret.")
TLS_CERT = typer.Option(None, "--tls-cert", help="PEM certificate of this process (enables mutual TLS).")
TLS_KEY = typer.Option(None, "--tls-key", help="PEM private key for --tls-cert.")
TLS_CA = typer.Option(None, "--tls-ca", help="PEM CA bundle that signed the peers' certificates.")
TIMEOUT = typer.Option(None, "--timeout", help="Give up after this many seconds [default: never].")


def read_secret(secret_file: Optional[Path], insecure: bool) -> bytes | None:
    """The cluster secret from --secret-file or $MESHLEARN_SECRET; refuse to run without one unless --insecure."""
    if secret_file is not None:
        try:
            secret = secret_file.read_bytes().strip()
        except OSError as err:
            raise UsageError(f"cannot read --secret-file {secret_file}: {err.strerror}") from None
    else:
        secret = os.environ.get("MESHLEARN_SECRET", "").encode()
    if secret:
        from meshlearn.wire.keys import WEAK_SECRET_BYTES

        if len(secret) < WEAK_SECRET_BYTES:
            print(f"warning: the cluster secret is only {len(secret)} bytes, which can be guessed; use at least "
                  f"{WEAK_SECRET_BYTES} random bytes (`meshlearn keys secret PATH` makes one)", file=sys.stderr)
        return secret
    if insecure:
        return None
    raise UsageError("no cluster secret: set MESHLEARN_SECRET or pass --secret-file PATH "
                     "(or --insecure for a local experiment without authentication)")


def server_keys(secret_file: Optional[Path], insecure: bool, client_keys: bool, who: str = "client"):
    """The listener's keys: the cluster secret, or with --client-keys a Keyring that derives each
    ``who``'s own key from it (``meshlearn keys issue``)."""
    secret = read_secret(secret_file, insecure)
    if not client_keys:
        return secret
    if secret is None:
        raise UsageError(f"--client-keys derives each {who}'s key from the cluster secret; drop --insecure")
    from meshlearn.wire.keys import Keyring

    return Keyring(issuer=secret)


def client_credential(key_file: Path, client_id: Optional[str], option: str = "--client-id"):
    """``(client id, Keyring)`` from --key-file; the id ``option``, when given too, must match it."""
    from meshlearn.wire.keys import Keyring, read_key_file

    owner, key = read_key_file(key_file)
    if client_id is not None and client_id != owner:
        raise UsageError(f"--key-file {key_file} is the key of {owner!r}, not of {option} {client_id!r}")
    return owner, Keyring(own=(owner, key))


def tls_files(cert, key, ca):
    """TLSFiles for --tls-cert/--tls-key/--tls-ca: all three or none, and each must exist."""
    given = [x is not None for x in (cert, key, ca)]
    if any(given) and not all(given):
        raise UsageError("TLS needs all three of --tls-cert, --tls-key and --tls-ca (or none of them)")
    for option, path in (("--tls-cert", cert), ("--tls-key", key), ("--tls-ca", ca)):
        if path is not None and not Path(path).is_file():
            raise UsageError(f"{option} {path}: no such file; pass the path of a PEM file")
    if not all(given):
        return None
    from meshlearn.experiment.fl.deploy import TLSFiles

    return TLSFiles(str(cert), str(key), str(ca))


def address(option: str, text: str, *, listening: bool = False) -> tuple[str, int]:
    """HOST:PORT (or [IPv6]:PORT) from --listen/--server/--peer; errors name the option and the valid ports.

    Parsed before anything heavy is imported, so that a typo is reported at once.
    """
    host, sep, port = text.rpartition(":")
    host = host.strip("[]")
    if not sep or not host or not port.isdigit():
        raise UsageError(f"{option}: address {text!r} must look like HOST:PORT, e.g. 127.0.0.1:7070")
    low = 0 if listening else 1  # listening on port 0 lets the OS pick a free one
    if not low <= int(port) <= 65535:
        raise UsageError(f"{option}: port {port} in {text!r} is out of range; use {low}..65535, e.g. 127.0.0.1:7070")
    return host, int(port)


def check_can_listen(listen: str, addr: tuple[str, int]) -> None:
    """Bind and release --listen once, so a taken port or foreign address fails before a run is created.

    Racy by nature (another process may take the port in between); serve still reports that case.
    """
    host, port = addr
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)
    except socket.gaierror as err:
        raise UsageError(f"--listen {listen}: cannot resolve {host!r} ({err.strerror}); "
                         "use an IP address of this machine, or 0.0.0.0 for all") from None
    for family, kind, proto, _, sockaddr in infos:
        with socket.socket(family, kind, proto) as sock:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as asyncio's create_server does,
            if family == socket.AF_INET6 and hasattr(socket, "IPPROTO_IPV6"):  # IPv6 sockets included
                sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, True)
            try:
                sock.bind(sockaddr)
            except OSError as err:
                raise UsageError(_bind_error(listen, err)) from None


def _bind_error(listen: str, err: OSError, run_id: str | None = None) -> str:
    resume = f" (then `meshlearn serve --resume {run_id}`)" if run_id else ""
    if err.errno == errno.EADDRINUSE:
        return (f"--listen {listen}: address already in use; pick a free port with --listen HOST:PORT "
                f"or stop the process holding it{resume}")
    if err.errno == errno.EADDRNOTAVAIL:
        return (f"--listen {listen}: this machine has no such address; use one of its own IP addresses, "
                f"or 0.0.0.0 for all{resume}")
    if err.errno == errno.EACCES:
        return (f"--listen {listen}: permission denied; ports below 1024 need root, pick a higher one "
                f"with --listen HOST:PORT{resume}")
    return f"--listen {listen}: cannot listen ({err.strerror or err}){resume}"


def check_client_id(cfg, client_id: str) -> None:
    """--client-id must be one of the config's clients (checked again, after loading data, by join_runtime)."""
    from meshlearn.experiment.fl.build import client_ids

    ids = client_ids(cfg.data.clients)
    if client_id not in ids:
        raise UsageError(f"--client-id {client_id!r} is not one of this config's {len(ids)} clients "
                         f"({ids[0]} … {ids[-1]}); pick one of them or raise data.clients")


def _say(text: str) -> None:
    print(text, flush=True)


def _console_log() -> None:
    """Warnings (rejected frames, peer errors) to stderr; the run's full log goes to its run.log."""
    handler = logging.StreamHandler()
    handler.setLevel(logging.WARNING)
    handler.setFormatter(logging.Formatter("%(levelname)s %(message)s"))
    logging.getLogger().addHandler(handler)


def _load(config: str, set_: list[str], role: str):
    """The experiment config, checked as a run would check it, for a process hosting ``role``."""
    from meshlearn.experiment import load_experiment
    from meshlearn.experiment.fl.deploy import check_role
    from meshlearn.experiment.fl.kind import check
    from meshlearn.experiment.fl.schema import FLExperiment

    cfg = load_experiment(config, set_)
    if not isinstance(cfg, FLExperiment):
        raise ConfigError("kind", f"serve / join / peer run federated-learning experiments; {config} is a "
                          f"{getattr(cfg, 'kind', '?')} experiment (run it with `meshlearn run`)")
    check_role(cfg, role)
    check(cfg.model_copy(update={"faults": type(cfg.faults)()}))  # [faults] are simulation-only
    return cfg


@app.command("serve")
def serve_cmd(
    config: Optional[str] = typer.Argument(None, help="TOML file or preset name; data.clients is how many joins to "
                                           "wait for."),
    listen: str = typer.Option("127.0.0.1:7070", "--listen", help="HOST:PORT to accept clients on."),
    set_: list[str] = typer.Option([], "--set", help="Override a config key, e.g. --set fl.rounds=5."),
    resume: Optional[str] = typer.Option(None, "--resume", help="Continue a stored run at its last completed round "
                                         "(--set may raise fl.rounds or change deadlines)."),
    runs_dir: Optional[Path] = typer.Option(None, "--runs-dir", help=RUNS_DIR_HELP),
    secret_file: Optional[Path] = SECRET_FILE, insecure: bool = INSECURE, client_keys: bool = CLIENT_KEYS,
    tls_cert: Optional[Path] = TLS_CERT, tls_key: Optional[Path] = TLS_KEY, tls_ca: Optional[Path] = TLS_CA,
    timeout: Optional[float] = TIMEOUT,
) -> None:
    """Run the FL server: wait for clients, run the rounds, store metrics and checkpoints.

    Needs the cluster secret in $MESHLEARN_SECRET or --secret-file (or --insecure on a trusted machine).
    Only the config's client ids may join; with --client-keys each needs its own key file.
    Gives up (exit 1) when no client joins within fl.join_timeout_s.
    """
    if (config is None) == (resume is None):
        raise ConfigError("", "give a CONFIG (TOML file or preset, e.g. `meshlearn serve quickstart`) "
                          "or --resume RUN (e.g. --resume latest), not both")
    addr = address("--listen", listen, listening=True)
    check_can_listen(listen, addr)
    secret, tls = server_keys(secret_file, insecure, client_keys), tls_files(tls_cert, tls_key, tls_ca)
    cfg = _load(config, set_, "server") if config else None

    from meshlearn.experiment.fl.deploy import serve_runtime
    from meshlearn.experiment.fl.kind import RoundSink
    from meshlearn.experiment.lifecycle import create_run, kind_of_config, open_run_for_resume
    from meshlearn.store import RunStore

    store = RunStore(runs_dir)
    if cfg is None:
        run, cfg, (state, t0) = open_run_for_resume(store, resume, set_)
    else:
        run, state, t0 = None, None, 0.0
    _console_log()

    def on_checkpoint(node, rnd, tensors, meta):
        run.save_checkpoint(rnd, tensors, meta)
        _say(f"checkpoint round {rnd} saved")

    sink = _LateSink()
    runtime, server = serve_runtime(cfg, listen=addr, secret=secret, tls=tls, sink=sink, on_checkpoint=on_checkpoint,
                                    resume=state, start_time=t0)
    if run is None:
        run = create_run(store, cfg, kind_of_config(cfg), mode="serve", listen=listen)
    sink.target = RoundSink(run, _say_round, time_key="wall_time")
    _say(f"serving run {run.id} on {listen}, starting at round {server.completed_round + 1}, "
         f"waiting for {cfg.data.clients} clients")
    first = server.completed_round
    finished = _serve(runtime, run, listen, timeout)
    _finish_serve(run, server, cfg.fl.rounds, server.completed_round - first, listen, finished)


def _finish_serve(run, server, rounds: int, rounds_run: int, listen: str, finished: bool) -> None:
    """Record and print how the serve ended, and exit with its code."""
    status, why = _outcome(server, server.completed_round >= rounds, rounds_run)
    run.finish(status, completed_round=server.completed_round, **({"error": why} if why else {}))
    hint = f"; is `meshlearn join` pointed at {listen}?" if server.gave_up else ""
    _say(f"run {run.id}: {status} after round {server.completed_round}" + (f" ({why}{hint})" if why else ""))
    sys.exit(0 if finished and status == "completed" else 1)


def _outcome(server, done: bool, rounds_run: int) -> tuple[str, str | None]:
    """How a serve ended: a run whose every round here kept the old model did not complete."""
    if server.gave_up:
        return ("completed" if done else "stopped"), server.gave_up
    if done and rounds_run and server.rounds_failed == rounds_run:
        return "failed", f"all {rounds_run} rounds failed: fewer updates than fl.min_completion of the selected clients"
    return ("completed" if done else "stopped"), None


def _say_round(rnd: int, m: dict) -> None:
    _say(f"round {rnd}: accuracy {m['accuracy']:.4f}, clients {m['clients_completed']:.0f}/"
         f"{m['clients_selected']:.0f}, up {m['bytes_up']:,.0f} B, down {m['bytes_down']:,.0f} B")


class _LateSink:
    """Forwards metrics to a sink set once the run directory exists (after everything was built)."""

    target = None

    def log(self, *args, **kwargs) -> None:
        self.target.log(*args, **kwargs)


def _serve(runtime, run, listen: str, timeout: Optional[float]) -> bool:
    """Run ``runtime`` as the owner of ``run``: a taken port is one line, Ctrl-C / SIGTERM end it interrupted."""
    from meshlearn.experiment.lifecycle import Terminated, running

    again = f"meshlearn serve --resume {run.id}" if run.info.get("mode") == "serve" else "the same command"
    try:
        with running(run):
            return runtime.run_forever(timeout)
    except KeyboardInterrupt as stop:
        _say(f"run {run.id}: {'terminated' if isinstance(stop, Terminated) else 'interrupted'}; completed rounds "
             f"are saved, continue with `{again}`")
        sys.exit(143 if isinstance(stop, Terminated) else 130)
    except OSError as err:  # the port was taken after check_can_listen: asyncio binds inside run_forever
        if err.errno in (errno.EADDRINUSE, errno.EADDRNOTAVAIL):
            raise UsageError(_bind_error(listen, err, run.id)) from None
        raise MeshlearnError(f"{listen} failed: {err}; run {run.id} is marked failed, "
                             f"continue with `{again}`") from None


@app.command("join")
def join_cmd(
    config: str = typer.Argument(..., help="The same TOML file or preset the server runs."),
    server: str = typer.Option("127.0.0.1:7070", "--server", help="HOST:PORT of `meshlearn serve`."),
    client_id: Optional[str] = typer.Option(None, "--client-id", help="This client's id, e.g. client-03 (selects its "
                                            "data shard) [default: the id of --key-file]."),
    set_: list[str] = typer.Option([], "--set", help="Override a config key (keep it consistent with the server)."),
    local_data: bool = typer.Option(False, "--local-data", help="Train on this machine's whole dataset (data.path) "
                                    "instead of a shard."),
    rejoin_s: float = typer.Option(5.0, "--rejoin-s", help="Re-announce after this many silent seconds (finds a "
                                   "restarted server)."),
    secret_file: Optional[Path] = SECRET_FILE, insecure: bool = INSECURE, key_file: Optional[Path] = KEY_FILE,
    tls_cert: Optional[Path] = TLS_CERT, tls_key: Optional[Path] = TLS_KEY, tls_ca: Optional[Path] = TLS_CA,
    timeout: Optional[float] = TIMEOUT,
) -> None:
    """Run one FL client: connect to the server, train when asked, exit when the run is over."""
    addr = address("--server", server)
    if key_file is not None:
        client_id, secret = client_credential(key_file, client_id)
    elif client_id is None:
        raise UsageError("pass --client-id ID (e.g. client-03), or --key-file ID.key from `meshlearn keys issue`")
    cfg = _load(config, set_, "client")
    check_client_id(cfg, client_id)
    if key_file is None:
        secret = read_secret(secret_file, insecure)
    tls = tls_files(tls_cert, tls_key, tls_ca)

    from meshlearn.experiment.fl.deploy import join_runtime

    _console_log()
    runtime, client = join_runtime(cfg, client_id, server=addr, secret=secret, tls=tls, local_data=local_data,
                                   rejoin_s=rejoin_s)
    _say(f"{client_id} joining {server}")
    finished = runtime.run_forever(timeout)
    _say(f"{client_id}: {'run finished' if client.finished else 'gave up'}")
    sys.exit(0 if finished and client.finished else 1)


@app.command("peer")
def peer_cmd(
    config: str = typer.Argument(..., help="The same TOML file or preset on every peer (a peer-to-peer algorithm)."),
    peer_id: str = typer.Option(..., "--id", help="This peer's id, e.g. client-03 (selects its data shard)."),
    listen: str = typer.Option(..., "--listen", help="HOST:PORT this peer accepts its neighbours on."),
    peer: list[str] = typer.Option([], "--peer", help="A neighbour's address, ID=HOST:PORT (repeatable)."),
    set_: list[str] = typer.Option([], "--set", help="Override a config key (the same on every peer)."),
    secret_file: Optional[Path] = SECRET_FILE, insecure: bool = INSECURE,
    tls_cert: Optional[Path] = TLS_CERT, tls_key: Optional[Path] = TLS_KEY, tls_ca: Optional[Path] = TLS_CA,
    runs_dir: Optional[Path] = typer.Option(None, "--runs-dir", help="Run store root for this peer's run "
                                            "[default: $MESHLEARN_RUNS or ./runs]."),
    timeout: Optional[float] = TIMEOUT,
) -> None:
    """Run one peer of a peer-to-peer algorithm over TCP with its topology neighbours.

    Each peer stores its own run (named CONFIG-NAME-PEER-ID) with its per-epoch accuracy."""
    addr = address("--listen", listen, listening=True)
    addresses = {}
    for item in peer:
        pid, sep, text = item.partition("=")
        if not sep or not pid:
            raise UsageError(f"--peer {item!r} must look like ID=HOST:PORT, e.g. client-01=127.0.0.1:7101")
        addresses[pid] = address(f"--peer {pid}", text)
    cfg = _load(config, set_, "peer")

    from meshlearn.experiment.fl.deploy import EpochPrinter, peer_runtime
    from meshlearn.experiment.fl.kind import RoundSink
    from meshlearn.experiment.lifecycle import create_run, kind_of_config
    from meshlearn.store import RunStore

    secret, tls = read_secret(secret_file, insecure), tls_files(tls_cert, tls_key, tls_ca)
    _console_log()
    printer, sink = EpochPrinter(_say), _LateSink()
    runtime, node = peer_runtime(cfg, peer_id, listen=addr, addresses=addresses, secret=secret,
                                 tls=tls, say=_say, sink=sink)
    named = cfg.model_copy(update={"name": f"{cfg.name}-{peer_id}"})
    run = create_run(RunStore(runs_dir), named, kind_of_config(cfg), mode="peer", peer=peer_id)
    sink.target = _Tee(RoundSink(run, None, time_key="wall_time"), printer)
    _say(f"{peer_id} listening on {listen}, neighbours {', '.join(node.neighbours)}; run {run.id}")
    finished = _serve(runtime, run, listen, timeout)
    run.finish("completed" if finished else "stopped")
    _say(f"{peer_id}: {'finished' if finished else 'timed out'}")
    sys.exit(0 if finished else 1)


class _Tee:
    def __init__(self, *sinks):
        self.sinks = sinks

    def log(self, *args, **kwargs) -> None:
        for sink in self.sinks:
            sink.log(*args, **kwargs)
