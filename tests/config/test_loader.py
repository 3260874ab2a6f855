"""load_config: merging base <- file <- --set overrides, and every error path."""

from __future__ import annotations

import enum
import math
from pathlib import Path
from typing import Literal, Optional

import pytest
from pydantic import BaseModel, ConfigDict, Field, field_validator

from meshlearn.config import apply_overrides, deep_merge, load_config, parse_value, validate_config
from meshlearn.errors import ConfigError, UsageError


class Color(str, enum.Enum):
    red = "red"
    blue = "blue"


class Client(BaseModel):
    model_config = ConfigDict(extra="forbid")
    name: str = Field("c", description="Client name.")
    lr: float = Field(0.1, description="Learning rate.")


class Train(BaseModel):
    model_config = ConfigDict(extra="forbid")
    algorithm: Literal["fedavg", "fedprox"] = Field("fedavg", description="Aggregation rule.")
    rounds: int = Field(10, description="Number of rounds.")
    color: Color = Field(Color.red, description="A colour enum.")


class Exp(BaseModel):
    model_config = ConfigDict(extra="forbid")
    seed: int = Field(0, description="Root seed.")
    note: Optional[str] = Field(None, description="Free text.")
    tags: list[str] = Field(default_factory=lambda: ["a"], description="Tags.")
    train: Train = Field(default_factory=Train, description="Training settings.")
    clients: list[Client] = Field(default_factory=lambda: [Client(), Client(name="d")], description="Clients.")


class NeedsName(BaseModel):
    model_config = ConfigDict(extra="forbid")
    name: str
    size: int = 1


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "exp.toml"
    path.write_text(text)
    return path


def problems(exc: pytest.ExceptionInfo) -> dict[str, tuple[str, list[str]]]:
    return {key: (reason, choices) for key, reason, choices in exc.value.problems}


# ----------------------------------------------------------------- happy path


def test_defaults_without_file() -> None:
    assert load_config(Exp, None) == Exp()


def test_file_over_base_over_defaults(tmp_path: Path) -> None:
    path = write(tmp_path, "seed = 3\n[train]\nrounds = 5\n")
    cfg = load_config(Exp, path, base={"seed": 1, "train": {"algorithm": "fedprox", "rounds": 2}})
    assert (cfg.seed, cfg.train.rounds, cfg.train.algorithm) == (3, 5, "fedprox")


def test_overrides_nested_lists_and_bare_strings(tmp_path: Path) -> None:
    path = write(tmp_path, "[train]\nrounds = 5\n")
    cfg = load_config(
        Exp,
        path,
        ["train.rounds=7", "train.color=blue", "tags=[\"x\", \"y\"]", "note=hello world", "seed=42"],
    )
    assert cfg.train.rounds == 7 and cfg.train.color is Color.blue
    assert cfg.tags == ["x", "y"] and cfg.note == "hello world" and cfg.seed == 42


def test_override_item_of_default_list() -> None:
    cfg = load_config(Exp, None, ["clients[1].lr=0.5", "clients.0.name=zed"])
    assert cfg.clients[1] == Client(name="d", lr=0.5)
    assert cfg.clients[0].name == "zed"


def test_override_whole_list_of_tables() -> None:
    cfg = load_config(Exp, None, ['clients=[{name="p", lr=1}, {name="q"}]'])
    assert [c.name for c in cfg.clients] == ["p", "q"] and cfg.clients[0].lr == 1.0


def test_override_appends_at_end_of_list() -> None:
    assert load_config(Exp, None, ["tags[1]=b"]).tags == ["a", "b"]


def test_later_override_wins() -> None:
    assert load_config(Exp, None, ["seed=1", "seed=2"]).seed == 2


@pytest.mark.parametrize(
    ("raw", "value"),
    [
        ("1", 1),
        ("0.5", 0.5),
        ("true", True),
        ('"x"', "x"),
        ("[1,2]", [1, 2]),
        ("{a=1}", {"a": 1}),
        ("fedavg", "fedavg"),
        ("1.2.3", "1.2.3"),
        ("", ""),
        ("a = 1\nb = 2", "a = 1\nb = 2"),
    ],
)
def test_parse_value(raw: str, value: object) -> None:
    assert parse_value(raw) == value


def test_parse_value_inf() -> None:
    assert math.isinf(parse_value("inf"))


def test_deep_merge_does_not_mutate() -> None:
    base = {"a": {"b": 1, "c": [1]}}
    merged = deep_merge(base, {"a": {"b": 2}})
    assert merged == {"a": {"b": 2, "c": [1]}} and base == {"a": {"b": 1, "c": [1]}}


def test_apply_overrides_does_not_mutate() -> None:
    data = {"train": {"rounds": 1}}
    assert apply_overrides(data, ["train.rounds=2"]) == {"train": {"rounds": 2}}
    assert data == {"train": {"rounds": 1}}


# ---------------------------------------------------------------- error paths


def test_unknown_key_lists_valid_keys_and_suggests(tmp_path: Path) -> None:
    path = write(tmp_path, "[train]\nrouns = 5\n")
    with pytest.raises(ConfigError) as exc:
        load_config(Exp, path)
    reason, choices = problems(exc)["train.rouns"]
    assert "unknown key" in reason and "algorithm, color, rounds" in reason
    assert "did you mean 'rounds'" in reason
    assert choices == ["algorithm", "color", "rounds"]
    assert "train.rouns: unknown key" in str(exc.value) and str(path) in str(exc.value)


def test_unknown_top_level_and_list_item_keys() -> None:
    with pytest.raises(ConfigError) as exc:
        validate_config(Exp, {"sed": 1, "clients": [{"nme": "x"}]})
    found = problems(exc)
    assert "did you mean 'seed'" in found["sed"][0]
    assert found["sed"][1] == ["clients", "note", "seed", "tags", "train"]
    assert found["clients[0].nme"][1] == ["lr", "name"]


def test_literal_error_lists_choices() -> None:
    with pytest.raises(ConfigError) as exc:
        load_config(Exp, None, ["train.algorithm=fedsgd"])
    reason, choices = problems(exc)["train.algorithm"]
    assert choices == ["fedavg", "fedprox"]
    assert "'fedsgd' is not a valid choice" in reason and "fedavg, fedprox" in reason
    assert "--set" in reason


def test_enum_error_lists_choices() -> None:
    with pytest.raises(ConfigError) as exc:
        validate_config(Exp, {"train": {"color": "green"}})
    assert problems(exc)["train.color"][1] == ["red", "blue"]


def test_type_error_names_expected_type_and_value() -> None:
    with pytest.raises(ConfigError) as exc:
        validate_config(Exp, {"train": {"rounds": "many"}, "clients": [{"lr": "fast"}], "train_": 1})
    found = problems(exc)
    assert found["train.rounds"][0] == "expected int, got 'many' (str)"
    assert found["clients[0].lr"][0] == "expected float, got 'fast' (str)"


def test_table_given_as_scalar() -> None:
    with pytest.raises(ConfigError) as exc:
        validate_config(Exp, {"train": 3})
    assert "expected table (Train), got 3 (int)" in problems(exc)["train"][0]


def test_missing_required_key() -> None:
    with pytest.raises(ConfigError) as exc:
        validate_config(NeedsName, {"size": 2})
    assert problems(exc)["name"][0] == "required key is missing"


def test_all_problems_in_one_error() -> None:
    with pytest.raises(ConfigError) as exc:
        validate_config(Exp, {"seed": "x", "train": {"algorithm": "y"}, "zzz": 1})
    assert len(exc.value.problems) == 3
    text = str(exc.value)
    assert text.startswith("3 problems in config") and "seed:" in text and "zzz:" in text
    assert exc.value.key == "seed"  # first problem is also exposed as .key/.reason


def test_single_problem_exposes_key_and_choices() -> None:
    with pytest.raises(ConfigError) as exc:
        validate_config(Exp, {"train": {"algorithm": "y"}})
    assert exc.value.key == "train.algorithm" and exc.value.choices == ["fedavg", "fedprox"]
    assert isinstance(exc.value, UsageError)


def test_missing_file_names_path(tmp_path: Path) -> None:
    missing = tmp_path / "nope.toml"
    with pytest.raises(ConfigError) as exc:
        load_config(Exp, missing)
    assert str(missing) in str(exc.value) and "does not exist" in str(exc.value)


def test_directory_instead_of_file(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="is a directory"):
        load_config(Exp, tmp_path)


def test_toml_syntax_error_has_line_and_column(tmp_path: Path) -> None:
    path = write(tmp_path, "seed = 1\n[train]\nrounds = = 5\n")
    with pytest.raises(ConfigError) as exc:
        load_config(Exp, path)
    assert (exc.value.line, exc.value.column) == (3, 10)
    assert "line 3, column 10" in str(exc.value) and "rounds = = 5" in str(exc.value)


def test_non_utf8_file(tmp_path: Path) -> None:
    path = tmp_path / "bad.toml"
    path.write_bytes(b"seed = '\xff'\n")
    with pytest.raises(ConfigError, match="UTF-8"):
        load_config(Exp, path)


@pytest.mark.parametrize("bad", ["seed", "=1", "a..b=1", " =3"])
def test_bad_override_syntax_explains_set(bad: str) -> None:
    with pytest.raises(ConfigError) as exc:
        load_config(Exp, None, [bad])
    assert "--set a.b=VALUE" in str(exc.value)


def test_override_into_scalar_is_explained() -> None:
    with pytest.raises(ConfigError, match="'seed'.*not a table"):
        load_config(Exp, None, ["seed.x=1"])


def test_override_index_out_of_range() -> None:
    with pytest.raises(ConfigError, match="list of 2 items"):
        load_config(Exp, None, ["clients[5].lr=1"])


def test_override_unknown_nested_key_reported_by_validation() -> None:
    with pytest.raises(ConfigError) as exc:
        load_config(Exp, None, ["train.roundz=3"])
    reason = problems(exc)["train.roundz"][0]
    assert "did you mean 'rounds'" in reason and "(from --set train.roundz=...)" in reason


class Sgd(BaseModel):
    model_config = ConfigDict(extra="forbid")
    kind: Literal["sgd"] = "sgd"
    momentum: float = 0.0


class Adam(BaseModel):
    model_config = ConfigDict(extra="forbid")
    kind: Literal["adam"] = "adam"
    beta: float = 0.9


class WithUnions(BaseModel):
    model_config = ConfigDict(extra="forbid")
    opt: Sgd | Adam = Field(default_factory=Sgd, discriminator="kind")
    groups: dict[str, Client] = Field(default_factory=dict)
    ratio: int | str = 1


def test_discriminated_union_unknown_key_and_tag() -> None:
    with pytest.raises(ConfigError) as exc:
        validate_config(WithUnions, {"opt": {"kind": "adam", "bta": 0.5}})
    reason, choices = problems(exc)["opt.bta"]
    assert choices == ["beta", "kind"] and "did you mean 'beta'" in reason
    with pytest.raises(ConfigError) as exc:
        validate_config(WithUnions, {"opt": {"kind": "rmsprop"}})
    assert problems(exc) == {"opt.kind": ("'rmsprop' is not a valid choice; valid: sgd, adam", ["sgd", "adam"])}
    with pytest.raises(ConfigError) as exc:
        validate_config(WithUnions, {"opt": {"beta": 0.5}})
    assert problems(exc)["opt.kind"][1] == ["sgd", "adam"]


def test_dict_of_models_keys_and_plain_union_hides_tags() -> None:
    with pytest.raises(ConfigError) as exc:
        validate_config(WithUnions, {"groups": {"g1": {"lr": "x", "nam": 1}}, "ratio": [1]})
    found = problems(exc)
    assert found["groups.g1.lr"][0] == "expected float, got 'x' (str)"
    assert found["groups.g1.nam"][1] == ["lr", "name"]
    assert set(found) == {"groups.g1.lr", "groups.g1.nam", "ratio"}


def test_unknown_key_named_like_a_type_is_still_shown() -> None:
    with pytest.raises(ConfigError) as exc:
        validate_config(Exp, {"train": {"int": 1}})
    assert list(problems(exc)) == ["train.int"]


def _at_most_one(value: dict) -> dict:
    if value.get("p", 0) > 1:
        raise ConfigError("p", f"must be at most 1, got {value['p']}", ["0", "1"])
    return value


class _Params(BaseModel):
    """A free-form table checked by a validator that raises ConfigError keyed inside the table."""

    model_config = ConfigDict(extra="forbid")
    params: dict = Field(default_factory=dict)

    _check = field_validator("params")(_at_most_one)


class _Outer(BaseModel):
    model_config = ConfigDict(extra="forbid")
    net: _Params = Field(default_factory=_Params)


def test_a_validators_config_error_is_reported_at_the_key_inside_the_table():
    with pytest.raises(ConfigError) as info:
        load_config(_Outer, None, ["net.params = {p=3}"])
    assert str(info.value).startswith("net.params.p: must be at most 1, got 3 (valid: 0, 1) (from --set net.params=")
    assert info.value.key == "net.params.p" and info.value.choices == ["0", "1"]


def test_a_nested_config_error_keeps_the_other_problems_of_the_document():
    with pytest.raises(ConfigError) as info:
        validate_config(_Outer, {"net": {"params": {"p": 2}, "extra": 1}})
    keys = [key for key, _, _ in info.value.problems]
    assert keys == ["net.params.p", "net.extra"]
