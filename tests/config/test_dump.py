"""to_toml, dump_with_comments and diff_from_default round-trip through the loader."""

from __future__ import annotations

import enum
import tomllib
from pathlib import Path
from typing import Literal, Optional

from pydantic import BaseModel, ConfigDict, Field

import meshlearn.config as config
from meshlearn.config import diff_from_default, dump_with_comments, load_config, to_toml


class Mode(str, enum.Enum):
    sync = "sync"
    async_ = "async"


class Layer(BaseModel):
    model_config = ConfigDict(extra="forbid")
    width: int = Field(32, description="Units in the layer.")
    act: Literal["relu", "tanh"] = Field("relu", description="Activation function.")


class Net(BaseModel):
    model_config = ConfigDict(extra="forbid")
    layers: list[Layer] = Field(default_factory=lambda: [Layer(), Layer(width=8)], description="Hidden layers.")
    dropout: Optional[float] = Field(None, description="Dropout rate, unset for none.")


class Exp(BaseModel):
    """A small experiment used by the tests."""

    model_config = ConfigDict(extra="forbid")
    seed: int = Field(7, description="Root seed for every generator.")
    mode: Mode = Field(Mode.sync, description="Round mode.")
    horizon: float = Field(float("inf"), description="Stop after this much simulated time.")
    weights: dict[str, float] = Field(default_factory=lambda: {"a": 1.0}, description="Per-group weights.")
    tags: list[str] = Field(default_factory=list, description="Free tags.\nSecond line.")
    net: Net = Field(default_factory=Net, description="The network.")
    heads: dict[str, Layer] = Field(default_factory=lambda: {"main": Layer()}, description="Output heads.")


class Required(BaseModel):
    model_config = ConfigDict(extra="forbid")
    name: str = Field(description="Experiment name.")
    size: int = Field(3, description="Size.")


def test_public_api() -> None:
    assert set(config.__all__) >= {"load_config", "to_toml", "dump_with_comments", "diff_from_default"}
    for name in config.__all__:
        assert hasattr(config, name)


def test_dump_round_trips_defaults() -> None:
    text = dump_with_comments(Exp)
    assert Exp.model_validate(tomllib.loads(text)) == Exp()


def test_dump_round_trips_modified_instance(tmp_path: Path) -> None:
    cfg = Exp(seed=1, mode=Mode.async_, tags=["x y"], net=Net(layers=[Layer(act="tanh")], dropout=0.2))
    path = tmp_path / "exp.toml"
    path.write_text(dump_with_comments(cfg))
    assert load_config(Exp, path) == cfg


def test_dump_has_every_description_before_its_field() -> None:
    text = dump_with_comments(Exp)
    for model in (Exp, Net, Layer):
        for field in model.model_fields.values():
            for line in field.description.splitlines():
                assert f"# {line}" in text
    lines = text.splitlines()
    assert lines[lines.index("seed = 7") - 1] == "# Root seed for every generator."
    assert "# A small experiment used by the tests." in text


def test_dump_tables_arrays_and_unset() -> None:
    text = dump_with_comments(Exp)
    assert text.count("[[net.layers]]") == 2 and "[net]" in text and "[heads.main]" in text
    assert "# dropout =" in text and "unset" in text
    assert "# choices: relu, tanh" in text and "# choices: sync, async" in text


def test_dump_class_with_required_field_comments_it_out() -> None:
    text = dump_with_comments(Required)
    assert "# name =" in text and "required" in text and "size = 3" in text
    assert tomllib.loads(text) == {"size": 3}


def test_to_toml_omits_none_and_round_trips() -> None:
    cfg = Exp(net=Net(dropout=None))
    text = to_toml(cfg)
    assert "dropout" not in text
    assert Exp.model_validate(tomllib.loads(text)) == cfg


def test_to_toml_keeps_set_optional() -> None:
    cfg = Exp(net=Net(dropout=0.5))
    assert tomllib.loads(to_toml(cfg))["net"]["dropout"] == 0.5


def test_diff_from_default() -> None:
    assert diff_from_default(Exp()) == {}
    cfg = Exp(seed=1, net=Net(dropout=0.1), weights={"a": 1.0})
    assert diff_from_default(cfg) == {"seed": 1, "net": {"dropout": 0.1}}
    changed = Exp(net=Net(layers=[Layer()]))
    assert diff_from_default(changed) == {"net": {"layers": [{"width": 32, "act": "relu"}]}}


def test_diff_nested_default_differs_from_class_default() -> None:
    class Outer(BaseModel):
        layer: Layer = Field(default_factory=lambda: Layer(width=64))

    assert diff_from_default(Outer()) == {}
    assert diff_from_default(Outer(layer=Layer(width=32))) == {"layer": {"width": 32}}


def test_diff_includes_required_fields() -> None:
    assert diff_from_default(Required(name="x")) == {"name": "x"}
