"""The ``swarm`` experiment kind: one study of a model partitioned across servers (``study``) into the run store.

    kind = "swarm"
    name = "swarm-scale"
    seed = 0
    study = "scale"            # scale | churn (meshlearn.swarm.studies)

    [scale]
    servers = 10000
    duration_s = 300.0

Results are stored as metrics like every study's (scalars, and row tables indexed by row) and whole in
results.json. The ``scale`` study runs real requests through a tiny GPT: this module builds it through
``meshlearn.swarm.blocks`` (the one torch module of the swarm; torch is never imported here) and hands
the study the block workspace and the reference: the whole stack in one call, one process.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, create_model

from meshlearn.errors import ConfigError
from meshlearn.experiment.kinds import ExperimentKind, register
from meshlearn.experiment.studies import PreparedStudy, headline, study_fields, summary
from meshlearn.registry import per_contents
from meshlearn.study import Study

__all__ = ["SwarmExperiment", "check", "config_model", "gpt_model", "study_of"]


def studies():
    from meshlearn.swarm.studies import STUDIES

    return STUDIES


class SwarmExperiment(BaseModel):
    """A simulated swarm experiment: a model in blocks over many servers (issue 13)."""

    model_config = ConfigDict(extra="forbid")

    kind: Literal["swarm"] = Field("swarm", description="experiment kind: swarm (a model partitioned across servers)")
    name: str = Field("swarm", pattern=r"^[A-Za-z0-9_.-]{1,64}$", description="run name in the run store")
    seed: int = Field(0, ge=0, description="root seed: servers, crashes, model weights, inputs")


@per_contents(studies)
def config_model() -> type[SwarmExperiment]:
    """The swarm experiment model: ``study`` plus one section per registered study."""
    return create_model("SwarmExperiment", __base__=SwarmExperiment, __doc__=SwarmExperiment.__doc__,
                        **study_fields(studies(), "study"))


def study_of(cfg: Any) -> Study:
    return studies().get(cfg.study)


def check(cfg: Any) -> None:
    """Another study's section set to non-default values would be ignored: an error naming it."""
    chosen = study_of(cfg)
    for _, study in studies().items():
        if study.key != chosen.key and getattr(cfg, study.key) != study.settings():
            raise ConfigError(study.key, f"settings of study {study.name!r}, but study = {cfg.study!r}: they "
                              "would be ignored; drop them or change study")


def gpt_model(settings: Any, seed: int) -> tuple:
    """``(workspace, blocks, inputs, reference)`` for the scale study: a tiny GPT of ``settings.blocks``
    blocks, ``settings.inputs`` random token sequences, the whole stack as the reference."""
    import numpy as np

    from meshlearn.models.gpt import GPTConfig, build_gpt
    from meshlearn.split.modelfile import one_thread
    from meshlearn.swarm.blocks import BlockStack, SpanWorkspace
    from meshlearn.swarm.tasks import SpanTask

    one_thread()
    heads = 2 if settings.d_model % 2 == 0 else 1
    config = GPTConfig(vocab_size=47, n_blocks=settings.blocks, d_model=settings.d_model, n_heads=heads,
                       context=settings.tokens)
    workspace = SpanWorkspace(BlockStack.from_gpt(build_gpt(config, seed).eval()), flops_per_block=1.0)
    rng = np.random.default_rng([seed, 2])
    inputs = [rng.integers(0, 47, size=(1, settings.tokens), dtype=np.int64) for _ in range(settings.inputs)]
    whole = SpanWorkspace(workspace.stack)

    def reference(x):
        return whole.run(SpanTask(0, settings.blocks, x)).y

    return workspace, settings.blocks, inputs, reference


register(ExperimentKind(
    "swarm", "a model partitioned across servers: placement under churn, 10,000-server scale runs",
    config=config_model, prepare=lambda cfg, state: PreparedStudy(cfg, study_of(cfg), "study",
                                                                  context=lambda run: {"model": gpt_model}),
    describe=lambda cfg: {"study": cfg.study}, summary=summary, headline=headline, check=check))
