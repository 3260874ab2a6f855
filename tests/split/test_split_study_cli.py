"""`meshlearn split tune | curve | bandit | search` end to end, in-process, on tiny settings.

The chain is the one docs/guide.md teaches: train a BatchNorm split CNN, COMtune it, measure both
models' curves through the channel, feed the curves to the MWJC bandit; plus a tiny NASC search.
"""

import json

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from meshlearn.cli import main  # noqa: E402
from meshlearn.split.modelfile import load_split_model  # noqa: E402


@pytest.fixture
def cli(capsys, monkeypatch, tmp_path):
    monkeypatch.setenv("COLUMNS", "200")
    monkeypatch.setenv("MESHLEARN_RUNS", str(tmp_path / "runs"))  # the shortcuts store their runs
    threads = torch.get_num_threads()

    def run(*args: str) -> tuple[int, str, str]:
        try:
            main([str(a) for a in args])
            code = 0
        except SystemExit as stop:
            code = stop.code
        out, err = capsys.readouterr()
        return code, out, err

    yield run
    torch.set_num_threads(threads)  # the commands set one thread


@pytest.fixture
def models(tmp_path, cli):
    plain, tuned = tmp_path / "plain.safetensors", tmp_path / "tuned.safetensors"
    code, out, err = cli("split", "train", "--out", plain, "--cut", "pool2", "--batch-norm", "--epochs", "3")
    assert code == 0, err
    assert json.loads(out)["batch_norm"] == 1
    code, out, err = cli("split", "tune", "--model", plain, "--out", tuned, "--p", "0.5", "--epochs", "3",
                         "--elements", "16")
    assert code == 0, err
    return plain, tuned, json.loads(out)


def test_tune_writes_a_loadable_model_that_tolerates_loss_better(models):
    plain, tuned, report = models
    assert report["packets"] == 32 and report["part"] == "tail"
    # the tuned model loses less at its own dropout rate than the untuned one
    assert report["after_pct"]["0.5"] > report["before_pct"]["0.5"]
    a, meta_a = load_split_model(plain)
    b, meta_b = load_split_model(tuned)
    assert meta_b["comtune_p"] == 0.5 and meta_b["cut"] == meta_a["cut"] == "pool2"
    # tail-only tuning: the device side is bit-identical, the server side changed
    for (name, x), (_, y) in zip(a.head.state_dict().items(), b.head.state_dict().items()):
        assert torch.equal(x, y), name
    assert any(not torch.equal(x, y) for x, y in zip(a.tail.state_dict().values(), b.tail.state_dict().values()))


def test_curves_feed_the_bandit(models, tmp_path, cli):
    plain, tuned, _ = models
    curves = tmp_path / "curves.json"
    code, out, err = cli("split", "curve", "--model", plain, "--model", tuned, "--elements", "16", "--rates",
                         "0,0.5,1", "--repeats", "2", "--out", curves)
    assert code == 0, err
    data = json.loads(curves.read_text())
    assert set(data["curves"]) == {"plain", "tuned"} and data["spec"]["elements_per_packet"] == 16
    assert [r for r, _ in data["curves"]["plain"]] == [0.0, 0.5, 1.0]
    assert data["curves"]["tuned"][1][1] > data["curves"]["plain"][1][1]  # tuned wins at 50 % loss
    assert "50%" in out and "plain" in out

    result = tmp_path / "bandit.json"
    code, out, err = cli("split", "bandit", "--curves", curves, "--rounds", "60", "--rates", "24,36",
                         "--retry-limits", "0,3", "--out", result)
    assert code == 0, err
    report = json.loads(result.read_text())
    assert report["arms"] == 8 and report["placeholder_curves"] == []
    assert report["settings"]["variants"] == ["plain", "tuned"] and report["settings"]["feedback"] == "link"
    assert sum(report["histogram"].values()) == 60 and report["best_arm"] in out


@pytest.mark.parametrize("args, message", [
    (["split", "curve", "--model", "x.safetensors", "--rates", "0,2"], "curve.rates: rates must be"),
    (["split", "curve", "--model", "x.safetensors", "--rates", "a,b"], "comma-separated numbers"),
    (["split", "bandit", "--curves", "missing.json"], "split curve --out"),
    (["split", "bandit", "--rates", "5"], "unknown PHY rates"),
    (["split", "bandit", "--variants", "nope"], "have no curve"),
    (["split", "bandit", "--feedback", "all"], "feedback"),
    (["split", "tune", "--model", "x.safetensors", "--out", "t.safetensors", "--p", "1"], "tune.p: "),
    (["split", "search", "--bottlenecks", "none,x"], "widths or 'none'"),
    (["split", "search", "--strategy", "random"], "strategy"),
    (["split", "search", "--out", "no/such/dir/r.json"], "does not exist"),
    (["split", "search", "--quants", "fp32,int8"], "quants: 'int8' was renamed: use 'uniform'"),
    (["split", "curve", "--model", "missing.safetensors"], "no such file"),
    (["split", "curve", "--model", "x.safetensors", "--quant", "int8"], "quant: 'int8' was renamed: use quant='uniform'"),
    (["split", "curve", "--model", "x.safetensors", "--quant", "int4"], "quant: 'int4' is not a valid choice"),
])
def test_bad_input_is_one_clear_line(cli, tmp_path, monkeypatch, args, message):
    monkeypatch.chdir(tmp_path)
    code, _, err = cli(*args)
    assert code == 2 and message in err and "Traceback" not in err, err
    assert not (tmp_path / "runs").exists()  # found before any run directory was made


def test_bad_curves_file_names_the_format(cli, tmp_path):
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps({"curves": {"a": [[0.0, 0.9], [0.5, 0.8]]}}))  # stops short of loss 1.0
    code, _, err = cli("split", "bandit", "--curves", bad)
    assert code == 2 and "from 0.0 to 1.0" in err
    bad.write_text("[1, 2")
    code, _, err = cli("split", "bandit", "--curves", bad)
    assert code == 2 and "not a curves file" in err


def test_tiny_search_beats_the_fixed_split(cli, tmp_path):
    out = tmp_path / "search.json"
    code, text, err = cli("split", "search", "--cuts", "relu1,relu_fc", "--bottlenecks", "none,8", "--quants",
                          "fp32,uniform", "--folds", "2", "--epochs", "3", "--finetune-epochs", "1", "--max-drop", "100",
                          "--out", out)
    assert code == 0, err
    result = json.loads(out.read_text())
    assert result["folds"] == 2 and result["confidence"] == 0.95 and result["candidates"] == 8
    assert result["chosen"] is not None and result["latency_ratio"] < 1
    assert result["baseline"]["quant"] == "fp32" and result["baseline"]["bottleneck"] is None
    assert result["chosen"]["candidate"] in text and "latency ratio" in text
    assert np.isfinite(result["chosen"]["test_accuracy"])
