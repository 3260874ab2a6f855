"""meshlearn.split: split computing — a model's head on a device, its tail on a server, and the
lossy channel for the tensor between them.

* ``meshlearn.split.model``: cut a model at a named layer (optional bottleneck); needs torch.
* ``meshlearn.split.channel``: the tensor channel (quantise with a ``wire/quant.py`` scheme, packetize, lose, cut at a
  deadline, reconstruct, account bytes and latency); numpy only, no torch.
* ``meshlearn.split.heatmap``: per-channel heat maps of a cut tensor as PNG; numpy only.

The torch-backed names load lazily, so ``import meshlearn.split`` stays light.
"""

from __future__ import annotations

from typing import Any

from meshlearn.split.channel import (
    HEADER,
    ChannelResult,
    ChannelSpec,
    DecodedPacket,
    Deliver,
    Delivery,
    Latency,
    cut_delivery,
    decode_packet,
    element_mask,
    encode_packets,
    end_to_end_latency,
    over_link,
    over_loss_model,
    over_network,
    packet_plan,
    reconstruct,
    simulate_batch,
    transmit,
)
from meshlearn.split.heatmap import channel_grid, heatmap_png, png_bytes, render_heatmaps

_MODEL_NAMES = ("SplitModel", "SplitPoint", "fit_classifier", "make_bottleneck", "split_cnn", "split_model",
                "split_points")

__all__ = [
    "HEADER", "ChannelResult", "ChannelSpec", "DecodedPacket", "Deliver", "Delivery", "Latency", "channel_grid", "cut_delivery",
    "decode_packet", "element_mask", "encode_packets", "end_to_end_latency", "heatmap_png",
    "over_link", "over_loss_model", "over_network", "packet_plan", "png_bytes", "reconstruct",
    "render_heatmaps", "simulate_batch", "transmit", *_MODEL_NAMES,
]


def __getattr__(name: str) -> Any:
    if name in _MODEL_NAMES:
        from meshlearn.split import model

        return getattr(model, name)
    raise AttributeError(f"module 'meshlearn.split' has no attribute {name!r}")
