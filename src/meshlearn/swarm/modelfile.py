"""The swarm model file's header, read without torch: format, block count, per-block digests.

A swarm model file (written by :meth:`meshlearn.swarm.blocks.BlockStack.save`) is safetensors whose meta
holds ``format`` (:data:`FORMAT`), ``recipe``, ``groups`` (children per block) and ``digests`` (SHA-256
of each block's weights). Commands that only need to know the model's shape of things — how many
blocks, which digests an announcement must carry (``swarm status``, a directory) — read the header
here and never import torch.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from meshlearn.errors import UsageError
from meshlearn.wire.files import load_tensors

__all__ = ["FORMAT", "ModelHeader", "read_header"]

FORMAT = "meshlearn.swarm/1"


@dataclass(frozen=True)
class ModelHeader:
    blocks: int
    digests: tuple[str, ...] | None  # None: a file written before digests were stored
    meta: dict


def read_header(path: str | Path) -> ModelHeader:
    """The header of a swarm model file; UsageError if it is not one."""
    _, meta = load_tensors(path, names=())
    if meta.get("format") != FORMAT:
        raise UsageError(f"{path} is not a swarm model file (format {meta.get('format')!r}, want {FORMAT!r}); "
                         "write one with `meshlearn swarm init` or BlockStack.save")
    digests = meta.get("digests")
    digests = tuple(digests) if isinstance(digests, list) and all(isinstance(d, str) for d in digests) else None
    return ModelHeader(len(meta["groups"]), digests, meta)
