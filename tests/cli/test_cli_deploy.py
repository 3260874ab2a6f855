"""`meshlearn serve` / `join`: refused before any socket or run directory when called wrong."""

import socket


def test_serve_needs_a_secret(cli_proc, workdir, usage_error):
    result = cli_proc("serve", "quickstart")
    usage_error(result, "MESHLEARN_SECRET", "--secret-file", "--insecure")
    assert not (workdir / "runs").exists()


def test_serve_unreadable_secret_file(cli, workdir, usage_error):
    usage_error(cli("serve", "quickstart", "--secret-file", workdir / "nope"), "--secret-file")


def test_serve_needs_config_or_resume(cli, usage_error):
    usage_error(cli("serve", "--insecure"), "CONFIG", "--resume")


def test_join_bad_server_address(cli, usage_error):
    usage_error(cli("join", "quickstart", "--server", "nohost", "--client-id", "client-00", "--insecure"),
                "--server", "HOST:PORT")


def test_join_port_out_of_range(cli, usage_error):
    usage_error(cli("join", "quickstart", "--server", "127.0.0.1:99999", "--client-id", "client-00", "--insecure"),
                "--server", "1..65535")


def test_serve_port_out_of_range(cli, workdir, usage_error):
    usage_error(cli("serve", "quickstart", "--listen", "0.0.0.0:70000", "--insecure"), "--listen", "0..65535")
    assert not (workdir / "runs").exists()


def test_join_unknown_client_id(cli, usage_error):
    # checked before the secret and the data: the first thing to fix is the id
    result = cli("join", "quickstart", "--client-id", "client-99")
    usage_error(result, "--client-id", "client-99", "client-00 … client-19", "data.clients")


def test_partial_tls_flags(cli, workdir, usage_error):
    (workdir / "c.pem").write_text("x")
    usage_error(cli("serve", "quickstart", "--insecure", "--tls-cert", workdir / "c.pem"),
                "--tls-cert", "--tls-key", "--tls-ca")
    usage_error(cli("join", "quickstart", "--client-id", "client-00", "--insecure", "--tls-key", "k.pem",
                    "--tls-ca", "ca.pem"), "--tls-cert")


def test_missing_tls_file(cli, usage_error):
    usage_error(cli("serve", "quickstart", "--insecure", "--tls-cert", "c.pem", "--tls-key", "k.pem",
                    "--tls-ca", "ca.pem"), "--tls-cert", "c.pem", "no such file")


def test_serve_on_a_taken_port(cli_proc, workdir, usage_error):
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        result = cli_proc("serve", "quickstart", "--listen", f"127.0.0.1:{port}", "--insecure", "--timeout", "10")
    usage_error(result, "--listen", "already in use", "free port")
    assert not (workdir / "runs").exists(), "refused before a run directory is created"


def test_serve_on_a_foreign_address(cli, workdir, usage_error):
    # 192.0.2.0/24 is TEST-NET-1: never an address of this machine
    usage_error(cli("serve", "quickstart", "--listen", "192.0.2.1:7070", "--insecure"), "--listen", "0.0.0.0")
    assert not (workdir / "runs").exists()

def test_serve_gives_up_when_no_client_joins(cli_proc, workdir):
    result = cli_proc("serve", "quickstart", "--set", "fl.join_timeout_s=1", "--insecure", "--listen", "127.0.0.1:0",
                      timeout=90)
    assert result.code == 1, result.err
    assert "no client joined within fl.join_timeout_s = 1 s" in result.out and "meshlearn join" in result.out
    (run,) = (workdir / "runs").iterdir()
    info = __import__("json").loads((run / "run.json").read_text())
    assert info["status"] == "stopped" and "no client joined" in info["error"] and info["mode"] == "serve"



def test_a_short_secret_is_accepted_with_a_warning(monkeypatch, capsys):
    from meshlearn.cli.deploy import read_secret

    monkeypatch.setenv("MESHLEARN_SECRET", "x")
    assert read_secret(None, False) == b"x"
    assert "only 1 bytes" in capsys.readouterr().err
    monkeypatch.setenv("MESHLEARN_SECRET", "a" * 16)
    assert read_secret(None, False) == b"a" * 16
    assert capsys.readouterr().err == ""


def test_keys_secret_and_issue_write_private_files_that_join_checks(cli, workdir, usage_error):
    assert cli("keys", "secret", workdir / "cluster.key").code == 0
    assert len((workdir / "cluster.key").read_text().strip()) == 64
    assert (workdir / "cluster.key").stat().st_mode & 0o077 == 0
    assert cli("keys", "issue", "client-00", "--secret-file", workdir / "cluster.key", "--out", workdir).code == 0
    usage_error(cli("join", "quickstart", "--key-file", workdir / "client-00.key", "--client-id", "client-01"),
                "is the key of 'client-00'")
    usage_error(cli("keys", "issue", "client-00", "--secret-file", workdir / "cluster.key", "--out", workdir),
                "exists")
    usage_error(cli("join", "quickstart", "--key-file", workdir / "cluster.key"), "not a meshlearn key file")
    usage_error(cli("join", "quickstart"), "--client-id", "--key-file")


def test_a_serve_whose_every_round_failed_is_not_completed():
    from types import SimpleNamespace

    from meshlearn.cli.deploy import _outcome

    server = SimpleNamespace(gave_up=None, rounds_failed=3)
    assert _outcome(server, True, 3)[0] == "failed" and "all 3 rounds failed" in _outcome(server, True, 3)[1]
    assert _outcome(SimpleNamespace(gave_up=None, rounds_failed=1), True, 3) == ("completed", None)
    assert _outcome(SimpleNamespace(gave_up=None, rounds_failed=0), True, 0) == ("completed", None)  # resumed, done
    assert _outcome(SimpleNamespace(gave_up="no client joined", rounds_failed=0), False, 0) == \
        ("stopped", "no client joined")
