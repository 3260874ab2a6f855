"""The split-computing studies (``study = "..."`` in a split experiment file) and their registry.

    train   fit split_cnn on digits and write a model file                          [train]
    infer   head → lossy channel → tail in the simulator: accuracy, bytes, latency     [infer]
    tune    COMtune: fine-tune with packet dropout at the cut, write the tuned model  [tune]
    curve   accuracy against packet-loss rate through the channel (curves JSON)      [curve]
    search  NASC-style search of cut × bottleneck × wire encoding                     [search]
    bandit  MWJC: a UCB bandit over PHY rate × retry limit × model variant            [bandit]

A study's ``run(settings, *, seed, progress, config, run_dir)`` gets the whole split experiment
config: ``infer``, ``tune`` and ``curve`` read its ``model`` (a model file; unset: one is trained as
``[train]`` says) and ``channel`` (the ChannelSpec the cut tensor crosses); ``uses`` lists what each
reads, so the kind can reject settings nothing reads. Files a study writes default to ``run_dir``.
The registry discovers every module of ``meshlearn.split``: a new study is one module that registers.
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any, Callable, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from meshlearn.errors import UsageError
from meshlearn.registry import Registry
from meshlearn.split.mwjc import MwjcSettings, load_curves, simulate_mwjc
from meshlearn.split.nasc import NascSettings, search
from meshlearn.split.modelfile import one_thread
from meshlearn.study import Study

__all__ = ["STUDIES", "register", "TrainStudy", "InferStudy", "TuneStudy", "CurveStudy", "SearchStudy", "BanditStudy",
           "DEFAULT_RATES"]

STUDIES: Registry[Study] = Registry("split_studies", discover="meshlearn.split")
DEFAULT_RATES = [round(0.1 * i, 1) for i in range(11)]
Progress = Callable[[float], None]


def register(study: Study) -> Study:
    return STUDIES.register(study.name, study)


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


def _out(path: str | None, run_dir: Path | None, default: str) -> Path | None:
    """Where a study writes a file: ``path`` if given (its directory must exist), else inside the run."""
    if path is not None:
        out = Path(path)
        if not out.parent.is_dir():
            raise UsageError(f"out {path}: directory {out.parent} does not exist; create it first")
        return out
    return None if run_dir is None else run_dir / default


# ----- train ------------------------------------------------------------------------------------
class TrainStudy(_Strict):
    """Train split_cnn on digits and cut it (also how infer / tune / curve get a model when ``model`` is unset)."""

    epochs: int = Field(15, ge=1, description="Adam epochs on the digits training split")
    cut: str = Field("relu2", description="layer of split_cnn to cut after")
    bottleneck: int | None = Field(None, ge=1, description="add a trained bottleneck of this width at the cut")
    batch_norm: bool = Field(False, description="BatchNorm after each conv (the COMtune setting)")
    out: str | None = Field(None, description="write the model file here [default: model.safetensors in the run]")


def trained(settings: TrainStudy, seed: int, progress: Progress | None = None):
    """``(SplitModel, meta)`` trained as ``settings`` say."""
    from meshlearn.split.modelfile import train_split_model

    tick = None if progress is None else (lambda done, total: progress(done / total))
    return train_split_model(epochs=settings.epochs, seed=seed, cut=settings.cut, bottleneck=settings.bottleneck,
                             batch_norm=settings.batch_norm, progress=tick)


def run_train(settings: TrainStudy, *, seed: int, progress: Progress | None = None, config: Any = None,
              run_dir: Path | None = None) -> dict:
    from meshlearn.split.modelfile import save_split_model

    t0 = time.perf_counter()
    split, meta = trained(settings, seed, progress)
    out = _out(settings.out, run_dir, "model.safetensors")
    if out is not None:
        save_split_model(out, split, meta)
    return {**meta, "cut_shape": list(split.cut_shape), "path": None if out is None else str(out),
            "seconds": round(time.perf_counter() - t0, 1)}


def model_of(config: Any, progress: Progress | None = None):
    """The experiment's split model: its ``model`` file, or one trained as its ``[train]`` section says."""
    from meshlearn.split.modelfile import load_split_model

    if config.model is not None:
        return load_split_model(config.model)
    return trained(config.train, config.seed, progress)


# ----- infer ------------------------------------------------------------------------------------
class InferStudy(_Strict):
    """Head → channel → tail in the simulator over the model's test samples, with injected packet loss."""

    samples: int = Field(200, ge=1, description="test samples to infer")
    loss: float = Field(0.0, ge=0, lt=1, description="injected packet loss: the head drops each packet with this "
                                                     "probability (keyed on the seed and the sample)")
    burst: float | None = Field(None, ge=1, description="mean burst length of the injected loss (a Gilbert model "
                                                        "with mean loss `loss`); unset: independent drops")
    window: int = Field(1, ge=1, description="samples in flight at once")
    reply_timeout_s: float = Field(1.0, gt=0, description="seconds the head waits for an answer before a miss")


def run_infer(settings: InferStudy, *, seed: int, progress: Progress | None = None, config: Any = None,
              run_dir: Path | None = None) -> dict:
    from meshlearn.split.modelfile import build_nodes, simulate

    one_thread()
    split, meta = model_of(config)
    head, tail = build_nodes(split, meta, config.channel, samples=settings.samples, loss=settings.loss, seed=seed,
                             reply_timeout=settings.reply_timeout_s, window=settings.window, burst=settings.burst)
    t0 = time.perf_counter()
    simulate(head, tail, seed=seed)
    return {"mode": "simulated", "seed": seed, "loss": settings.loss, "burst": settings.burst, **head.summary(),
            "wall_s": round(time.perf_counter() - t0, 2), "predictions": head.predictions().tolist()}


# ----- COMtune and curves -----------------------------------------------------------------------
class TuneStudy(_Strict):
    """COMtune: fine-tune the model with packet dropout at the cut, exactly as the channel packs it."""

    p: float = Field(0.5, ge=0, lt=1, description="packet dropout rate at the cut during fine-tuning")
    epochs: int = Field(30, ge=1, description="fine-tuning epochs (cosine-annealed Adam)")
    lr: float = Field(2e-3, gt=0, description="peak learning rate")
    part: Literal["tail", "all"] = Field("tail", description="tail: tune the server side only (the device model "
                                                             "stays as it is); all: head and tail")
    quantize: bool = Field(False, description="fake-quantize the cut with the channel's scheme while tuning")
    out: str | None = Field(None, description="write the tuned model here [default: tuned.safetensors in the run]")


def _data(meta: dict):
    import torch

    from meshlearn.data import load_dataset

    train_set, test_set = load_dataset(str(meta["dataset"]), seed=int(meta["data_seed"]))
    return (torch.from_numpy(train_set.x), torch.from_numpy(train_set.y)), (test_set.x, test_set.y)


def _packets(n_elements: int, spec) -> int:
    from meshlearn.split.channel import packet_plan

    return int(packet_plan(n_elements, spec)[2])


def run_tune(settings: TuneStudy, *, seed: int, progress: Progress | None = None, config: Any = None,
             run_dir: Path | None = None) -> dict:
    from meshlearn.split.comtune import comtune, loss_curve
    from meshlearn.split.modelfile import save_split_model

    one_thread()
    spec, t0 = config.channel, time.perf_counter()
    split, meta = model_of(config)
    train_xy, test_xy = _data(meta)
    tick = None if progress is None else (lambda done, _: progress(done / settings.epochs))
    tuned = comtune(split, train_xy, settings.p, epochs=settings.epochs, lr=settings.lr, spec=spec, seed=seed,
                    part=settings.part, quantize=settings.quantize, progress=tick)
    rates = sorted({0.0, settings.p})
    before, after = (dict(loss_curve(m, test_xy, spec, rates, repeats=5, seed=seed)) for m in (split, tuned))
    out = _out(settings.out, run_dir, "tuned.safetensors")
    if out is not None:
        save_split_model(out, tuned, {**meta, "comtune_p": settings.p, "comtune_part": settings.part,
                                      "comtune_epochs": settings.epochs, "tuned_from": str(config.model),
                                      "test_accuracy_pct": round(100 * after[0.0], 2)})
    return {"path": None if out is None else str(out), "p": settings.p, "part": settings.part,
            "packets": _packets(split.cut_numel, spec),
            "before_pct": {f"{r:g}": round(100 * a, 2) for r, a in before.items()},
            "after_pct": {f"{r:g}": round(100 * a, 2) for r, a in after.items()},
            "seconds": round(time.perf_counter() - t0, 1)}


class CurveStudy(_Strict):
    """Accuracy against packet-loss rate through the real channel, per model (the input of ``bandit``)."""

    rates: list[float] = Field(DEFAULT_RATES, min_length=1, description="packet-loss rates, distinct and rising "
                                                                        "in [0, 1] (bandit needs 0 to 1)")
    repeats: int = Field(10, ge=1, description="loss draws per rate (the whole test split each time)")
    models: list[str] = Field([], description="model files to measure (named by file stem) [default: the "
                                              "experiment's model]")
    out: str | None = Field(None, description="write the curves JSON here [default: curves.json in the run]")

    @field_validator("rates")
    @classmethod
    def _rising(cls, value: list[float]) -> list[float]:
        if any(not 0.0 <= r <= 1.0 for r in value) or sorted(set(value)) != value:
            raise ValueError(f"rates must be distinct rising rates in [0, 1], got {value}")
        return value


def run_curve(settings: CurveStudy, *, seed: int, progress: Progress | None = None, config: Any = None,
              run_dir: Path | None = None) -> dict:
    from meshlearn.split.comtune import loss_curve
    from meshlearn.split.modelfile import load_split_model

    one_thread()
    names = [Path(m).stem for m in settings.models]
    if len(set(names)) != len(names):
        raise UsageError(f"curve models need distinct file names (curves are named by file stem), got {names}")
    loaded = [load_split_model(m) for m in settings.models] or [model_of(config)]
    names = names or [Path(config.model).stem if config.model else "model"]
    curves = {}
    for i, (name, (split, meta)) in enumerate(zip(names, loaded)):
        curves[name] = loss_curve(split, _data(meta)[1], config.channel, settings.rates, repeats=settings.repeats,
                                  seed=seed)
        if progress is not None:
            progress((i + 1) / len(loaded))
    result = {"source": "meshlearn split curve", "spec": config.channel.model_dump(), "repeats": settings.repeats,
              "seed": seed, "models": settings.models, "packets": _packets(loaded[0][0].cut_numel, config.channel),
              "curves": curves}
    out = _out(settings.out, run_dir, "curves.json")
    if out is not None:
        out.write_text(json.dumps(result, indent=1) + "\n")
    return {**result, "path": None if out is None else str(out)}


def check_model(settings: Any, *, config: Any) -> None:
    """The experiment's model file (if any) loads; an ``out`` directory exists."""
    from meshlearn.split.modelfile import load_split_model

    if config.model is not None:
        load_split_model(config.model)
    for path in getattr(settings, "models", []):
        load_split_model(path)
    _out(getattr(settings, "out", None), None, "")


# ----- search and bandit ------------------------------------------------------------------------
class SearchStudy(NascSettings):
    """NASC-style search (``[search]``): the search's settings, plus where to write its full result."""

    out: str | None = Field(None, description="also write the result JSON here [default: results.json in the run]")


def run_search(settings: SearchStudy, *, seed: int, progress: Progress | None = None, config: Any = None,
               run_dir: Path | None = None) -> dict:
    one_thread()
    result = search(NascSettings(**settings.model_dump(exclude={"out"})), seed=seed)
    if settings.out is not None:
        Path(settings.out).write_text(json.dumps(result, indent=1, default=str) + "\n")
    return result


class BanditStudy(MwjcSettings):
    """MWJC (``[bandit]``): the bandit's settings, plus the measured curves it plays the model variants on."""

    curves_file: str | None = Field(None, description="curves JSON from the curve study (`meshlearn split curve`); "
                                                      "its curves become the model variants [default: the built-in "
                                                      "placeholder curves]")


def game_of(settings: BanditStudy) -> MwjcSettings:
    """The MWJC settings the bandit plays: the measured curves (and their names as variants) if given."""
    measured = {} if settings.curves_file is None else load_curves(settings.curves_file)
    update: dict[str, Any] = {"curves": measured} if measured else {}
    if measured and settings.variants == BanditStudy.model_fields["variants"].default:
        update["variants"] = list(measured)
    try:
        return MwjcSettings(**{**settings.model_dump(exclude={"curves_file"}), **update})
    except ValidationError as exc:  # the measured curves do not fit the game: say why, in one line
        raise UsageError("; ".join(e["msg"].removeprefix("Value error, ") for e in exc.errors())) from None


def run_bandit(settings: BanditStudy, *, seed: int, progress: Progress | None = None, config: Any = None,
               run_dir: Path | None = None) -> dict:
    game = game_of(settings)
    tick = None if progress is None else (lambda t, _: progress(t / game.rounds))
    return {"settings": game.model_dump(), **simulate_mwjc(game, seed=seed, progress=tick)}


def _check_out(settings: Any, **context: Any) -> None:
    _out(getattr(settings, "out", None), None, "")


def _check_bandit(settings: BanditStudy, **context: Any) -> None:
    try:
        game_of(settings)
    except UsageError as exc:  # the curves file is not the only source of a bad game: name the section
        raise UsageError(f"bandit: {exc}") from None


_MODEL = ("model", "channel", "train")
register(Study("train", "train split_cnn on digits and write a model file", TrainStudy, run_train, check=_check_out))
register(Study("infer", "head → lossy channel → tail in the simulator: accuracy, bytes, latency", InferStudy,
               run_infer, uses=_MODEL, default=True, check=check_model))
register(Study("tune", "COMtune: fine-tune with packet dropout at the cut", TuneStudy, run_tune, uses=_MODEL,
               check=check_model))
register(Study("curve", "accuracy against packet-loss rate through the channel", CurveStudy, run_curve,
               uses=_MODEL, check=check_model))
register(Study("search", "NASC-style search of cut × bottleneck × wire encoding", SearchStudy, run_search,
               check=_check_out))
register(Study("bandit", "MWJC: UCB over PHY rate × retry limit × model variant", BanditStudy, run_bandit,
               check=_check_bandit))
