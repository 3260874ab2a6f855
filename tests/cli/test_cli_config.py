"""`meshlearn config show`: commented TOML that loads back."""

import tomllib


def test_defaults_are_commented_toml(cli):
    result = cli("config", "show")
    assert result.code == 0, result.err
    data = tomllib.loads(result.out)
    assert data["fl"]["rounds"] == 30
    lines = result.out.splitlines()
    at = next(i for i, line in enumerate(lines) if line.startswith("rounds ="))
    assert lines[at - 1].startswith("#"), "every key has a comment line above it"


def test_preset(cli):
    result = cli("config", "show", "quickstart")
    assert result.code == 0, result.err
    assert "clients = 20" in result.out
    assert tomllib.loads(result.out)["data"]["clients"] == 20


def test_file(cli, workdir):
    path = workdir / "mine.toml"
    path.write_text('name = "mine"\n[fl]\nrounds = 7\n')
    result = cli("config", "show", path)
    assert result.code == 0, result.err
    data = tomllib.loads(result.out)
    assert data["name"] == "mine" and data["fl"]["rounds"] == 7
