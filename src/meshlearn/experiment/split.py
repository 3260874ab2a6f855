"""The ``split`` experiment kind: one split-computing study (``study``) into the run store.

    kind = "split"
    name = "split-infer"
    seed = 0
    study = "infer"             # train | infer | tune | curve | search | bandit (meshlearn.split.studies)
    model = "cnn.safetensors"   # a split model file; unset: one is trained as [train] says

    [channel]                   # how the cut tensor crosses the network (ChannelSpec)
    quant = "fp16"
    elements_per_packet = 512

    [infer]
    samples = 200
    loss = 0.3

Results are stored as metrics like every study's (scalars, and row tables indexed by row); files a
study writes (model files, curves JSON) go where its ``out`` says, by default into the run
directory. The ``meshlearn split train | infer --simulate | tune | curve | search | bandit``
commands are shortcuts that build the same config.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, create_model

from meshlearn.errors import ConfigError
from meshlearn.experiment.kinds import ExperimentKind, register
from meshlearn.experiment.studies import PreparedStudy, headline, study_fields, summary
from meshlearn.registry import per_contents
from meshlearn.study import Study

__all__ = ["SplitExperiment", "DEFAULT_CHANNEL", "check", "config_model", "prepare", "studies"]


def studies():
    from meshlearn.split.studies import STUDIES

    return STUDIES


def _default_channel():
    from meshlearn.split.channel import ChannelSpec

    return ChannelSpec(quant="fp16", elements_per_packet=512, deadline_s=0.05)


DEFAULT_CHANNEL = _default_channel  # the channel of a split experiment unless it says otherwise


def _shared_fields() -> dict[str, Any]:
    from meshlearn.split.channel import ChannelSpec
    from meshlearn.split.studies import TrainStudy

    return {"channel": (ChannelSpec, Field(default_factory=_default_channel, description="how the cut tensor "
                                           "crosses the network: encoding, packets, deadline (infer, tune, curve)")),
            "train": (TrainStudy, Field(default_factory=TrainStudy, description="the model to train (study train; "
                                        "infer / tune / curve when model is unset)"))}


class SplitExperiment(BaseModel):
    """A split-computing experiment: a model cut into head and tail, the channel between them, one study."""

    model_config = ConfigDict(extra="forbid")

    kind: Literal["split"] = Field("split", description="experiment kind: split (split computing studies)")
    name: str = Field("split", pattern=r"^[A-Za-z0-9_.-]{1,64}$", description="run name in the run store")
    seed: int = Field(0, ge=0, description="root seed: weights, batch order, injected loss, bandit")
    model: str | None = Field(None, description="split model file (meshlearn split train); unset: train one as "
                                                "[train] says (infer, tune, curve)")


@per_contents(studies)
def config_model() -> type[SplitExperiment]:
    """The split experiment model: ``study``, the shared model/channel/train keys, one section per study."""
    return create_model("SplitExperiment", __base__=SplitExperiment, __doc__=SplitExperiment.__doc__,
                        **study_fields(studies(), "study", _shared_fields()))


def study_of(cfg: Any) -> Study:
    return studies().get(cfg.study)


def _changed(cfg: Any, key: str) -> bool:
    field = type(cfg).model_fields[key]
    return getattr(cfg, key) != field.get_default(call_default_factory=True)


def check(cfg: Any) -> None:
    """Settings the chosen study never reads (another study's section, a model or channel it ignores) are errors."""
    chosen = study_of(cfg)
    read = {chosen.key, *chosen.uses}
    for key in ("model", "channel", "train", *(s.key for _, s in studies().items())):
        if key not in read and _changed(cfg, key):
            raise ConfigError(key, f"not read by study {cfg.study!r} (it reads: {', '.join(sorted(read))}); drop it "
                              "or change study")


def prepare(cfg: Any, state: Any = None) -> PreparedStudy:
    """The chosen study, given the whole config and the run directory (where its files go by default)."""
    return PreparedStudy(cfg, study_of(cfg), "study",
                         context=lambda run: {"config": cfg, **({"run_dir": run.path} if run is not None else {})})


register(ExperimentKind(
    "split", "split computing: train, simulate, COMtune, loss curves, NASC-style search, MWJC bandit",
    config=config_model, prepare=prepare, describe=lambda cfg: {"study": cfg.study},
    summary=summary, headline=headline, check=check))
