"""`meshlearn data show`: the experiment's partition, one row per client, and its statistics."""

import re

ROW = re.compile(r"^│\s*(\d+)\s*│\s*(\d+)\s*│\s*(\d+)\s*│")


def client_rows(text: str) -> list[tuple[int, int, int]]:
    return [tuple(map(int, m.groups())) for m in map(ROW.match, text.splitlines()) if m]


def test_data_show_five_clients(cli_proc):
    result = cli_proc("data", "show", "quickstart", "--set", "data.clients=5")
    assert result.code == 0, result.err
    rows = client_rows(result.out)
    assert [r[0] for r in rows] == [0, 1, 2, 3, 4]
    assert sum(r[1] for r in rows) == 1438  # every training sample of digits goes to one client
    stats = next(line for line in result.out.splitlines() if line.startswith("samples per client"))
    sizes = sorted(r[1] for r in rows)
    assert f"min {sizes[0]}, median {sizes[2]}, max {sizes[-1]}" in stats
    assert "classes per client: mean" in stats and "label entropy: mean" in stats and "bits" in stats
    assert "digits" in result.out and "dirichlet" in result.out


def test_data_show_rows_and_shards(cli):
    # in-process (fast); build_workspace sets torch's thread count to runtime.torch_threads = 1, as the suite runs
    result = cli("data", "show", "quickstart", "--set", "data.partition=shards",
                 "--set", "data.classes_per_client=2", "--rows", "3")
    assert result.code == 0, result.err
    rows = client_rows(result.out)
    assert len(rows) == 3 and all(r[2] <= 2 for r in rows)
    assert "17 more clients" in result.out
    assert "classes per client: mean 2.0" in result.out


def test_data_show_bad_rows(cli):
    result = cli("data", "show", "quickstart", "--rows", "0")
    assert result.code == 2 and "--rows" in result.err and "Traceback" not in result.err
