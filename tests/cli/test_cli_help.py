"""Every command and group answers --help with exit 0 and names its key options."""

import pytest

HELP = {
    (): ["run", "demo", "config", "runs", "data", "serve", "join", "peer", "overlay", "keys", "swarm"],
    ("keys",): ["secret", "issue"],
    ("keys", "issue"): ["--out", "--secret-file"],
    ("swarm",): ["init", "serve", "infer", "generate", "status", "train", "train-serve"],
    ("swarm", "serve"): ["--model", "--blocks", "--capacity", "--join", "--id", "--listen", "--secret-file"],
    ("swarm", "infer"): ["--model", "--server", "--join", "--requests", "--timeout", "--out"],
    ("swarm", "generate"): ["--model", "--server", "--join", "--prompt", "--tokens", "--temperature", "--check"],
    ("swarm", "status"): ["--model", "--join", "--json"],
    ("swarm", "train"): ["--model", "--server", "--steps", "--out"],
    ("overlay",): ["sim", "up"],
    ("split",): ["train", "serve", "infer", "heatmap", "tune", "curve", "search", "bandit"],
    ("split", "train"): ["--out", "--cut", "--bottleneck", "--batch-norm"],
    ("split", "tune"): ["--model", "--out", "--p", "--part", "--quantize", "--elements"],
    ("split", "curve"): ["--model", "--rates", "--repeats", "--out", "split bandit"],
    ("split", "search"): ["--link-mbps", "--latency-ms", "--max-drop", "--folds", "--confidence", "--strategy"],
    ("split", "bandit"): ["--curves", "--variants", "--rates", "--retry-limits", "--lam", "--feedback", "--rounds"],
    ("split", "serve"): ["--model", "--listen", "--secret-file", "--deadline"],
    ("split", "infer"): ["--model", "--server", "--samples", "--loss", "--burst", "--seed", "--simulate"],
    ("split", "heatmap"): ["--model", "--out", "--loss", "--burst", "--sample"],
    ("overlay", "sim"): ["--set", "--runs-dir", "examples/overlay"],
    ("overlay", "up"): ["--listen", "--cluster", "--seed", "--preset", "--duration", "--events", "--secret-file"],
    ("peer",): ["--id", "--listen", "--peer", "--set", "--secret-file", "--insecure", "--tls-cert", "--runs-dir"],
    ("run",): ["--set", "--resume", "--runs-dir", "--quiet"],
    ("demo",): ["--runs-dir", "--quiet"],
    ("config",): ["show"],
    ("config", "show"): ["Preset or TOML file"],
    ("runs",): ["list", "show", "export"],
    ("runs", "list"): ["--runs-dir"],
    ("runs", "show"): ["--runs-dir", "latest"],
    ("runs", "export"): ["--format", "--out", "--runs-dir", "csv", "json"],
    ("data",): ["show"],
    ("data", "show"): ["--set", "--rows", "TOML file or preset"],
    ("serve",): ["--listen", "--set", "--resume", "--runs-dir", "--secret-file", "--insecure", "--tls-cert",
                 "--tls-key", "--tls-ca", "--timeout", "--client-keys"],
    ("join",): ["--server", "--client-id", "--set", "--local-data", "--secret-file", "--insecure", "--tls-cert",
                "--key-file"],
}


@pytest.mark.parametrize("command", list(HELP), ids=lambda c: " ".join(c) or "meshlearn")
def test_help(cli, command):
    result = cli(*command, "--help")
    assert result.code == 0, result.err
    assert "Usage:" in result.out
    for needle in HELP[command]:
        assert needle in result.out, (needle, result.out)


@pytest.mark.parametrize("group", [[], ["config"], ["runs"], ["data"], ["overlay"], ["split"]], ids=lambda g: " ".join(g) or "meshlearn")
def test_group_without_command_shows_help(cli, group):
    result = cli(*group)
    assert result.code in (0, 2)  # click's no_args_is_help exits 2 on newer versions
    assert "Usage:" in result.out + result.err
    assert "Traceback" not in result.err


def test_python_dash_m_help_runs_the_real_entry_point(cli_proc):
    result = cli_proc("--help")
    assert result.code == 0, result.err
    assert "data" in result.out and "serve" in result.out
