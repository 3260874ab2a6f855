"""Per-channel heat maps of a cut tensor, before and after the channel, as PNG bytes (numpy + zlib).

Each channel of a (C, H, W) tensor becomes one tile of a grid, coloured with the "hot" map
(black → red → yellow → white) on one **global** min-max scale taken from the tensor before loss,
as in the lab's intermediate-output visualiser; a flat (D,) tensor is shown as one near-square
tile. With ``mask`` (True = arrived) lost elements are painted blue in the "after" panel, so a
zero that the model produced and a zero the network produced look different. Padding is grey.
No plotting library is needed: ``png_bytes`` writes an 8-bit RGB PNG itself.
"""

from __future__ import annotations

import math
import struct
import zlib
from pathlib import Path

import numpy as np

from meshlearn.errors import UsageError

__all__ = ["channel_grid", "hot_colormap", "png_bytes", "heatmap_png", "render_heatmaps"]

_PAD = np.array([96, 96, 96], np.uint8)
_LOST = np.array([40, 90, 255], np.uint8)


def _as_channels(t: np.ndarray) -> np.ndarray:
    t = np.asarray(t, np.float32)
    if t.ndim == 3:
        return t
    if t.ndim == 1:
        w = max(1, math.ceil(math.sqrt(t.size)))
        h = max(1, -(-t.size // w))
        out = np.full(h * w, np.nan, np.float32)
        out[: t.size] = t
        return out.reshape(1, h, w)
    raise UsageError(f"heat maps need a (C, H, W) or (D,) tensor for one sample, got shape {t.shape}")


def channel_grid(t: np.ndarray, *, cols: int | None = None, pad: int = 1, lo: float | None = None,
                 hi: float | None = None) -> np.ndarray:
    """Tile the channels of one sample into a 2-D array of values in [0, 1] (NaN = padding).

    ``lo``/``hi`` fix the colour scale (default: the tensor's own finite min and max).
    """
    chans = _as_channels(t)
    c, h, w = chans.shape
    cols = int(cols) if cols else max(1, math.ceil(math.sqrt(c)))
    if cols < 1 or pad < 0:
        raise UsageError(f"need cols >= 1 and pad >= 0, got cols={cols}, pad={pad}")
    rows = -(-c // cols)
    finite = chans[np.isfinite(chans)]
    lo = float(finite.min()) if lo is None and finite.size else (0.0 if lo is None else float(lo))
    hi = float(finite.max()) if hi is None and finite.size else (1.0 if hi is None else float(hi))
    norm = np.clip((chans - lo) / (hi - lo if hi > lo else 1.0), 0.0, 1.0)
    grid = np.full((rows * (h + pad) + pad, cols * (w + pad) + pad), np.nan, np.float32)
    for i in range(c):
        r, q = divmod(i, cols)
        top, left = pad + r * (h + pad), pad + q * (w + pad)
        grid[top : top + h, left : left + w] = norm[i]
    return grid


def hot_colormap(v: np.ndarray) -> np.ndarray:
    """Values in [0, 1] → uint8 RGB (matplotlib's "hot"); NaN → grey."""
    v = np.asarray(v, np.float64)
    rgb = np.stack([np.clip(3 * v, 0, 1), np.clip(3 * v - 1, 0, 1), np.clip(3 * v - 2, 0, 1)], axis=-1)
    out = np.rint(np.nan_to_num(rgb) * 255).astype(np.uint8)
    out[np.isnan(v)] = _PAD
    return out


def png_bytes(rgb: np.ndarray) -> bytes:
    """Encode an (H, W, 3) uint8 array as an RGB PNG."""
    rgb = np.ascontiguousarray(rgb, np.uint8)
    if rgb.ndim != 3 or rgb.shape[2] != 3 or rgb.shape[0] < 1 or rgb.shape[1] < 1:
        raise UsageError(f"png_bytes needs a non-empty (H, W, 3) uint8 array, got shape {rgb.shape}")
    h, w, _ = rgb.shape
    raw = np.concatenate([np.zeros((h, 1), np.uint8), rgb.reshape(h, w * 3)], axis=1)  # filter 0 per row

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    header = struct.pack(">IIBBBBB", w, h, 8, 2, 0, 0, 0)  # 8-bit RGB, no interlace
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(raw.tobytes(), 6)) \
        + chunk(b"IEND", b"")


def _upscale(rgb: np.ndarray, scale: int) -> np.ndarray:
    if int(scale) < 1:
        raise UsageError(f"scale must be a positive integer, got {scale}")
    return np.repeat(np.repeat(rgb, int(scale), axis=0), int(scale), axis=1)


def heatmap_png(t: np.ndarray, *, scale: int = 4, cols: int | None = None) -> bytes:
    """PNG of one sample's per-channel heat map on its own min-max scale."""
    return png_bytes(_upscale(hot_colormap(channel_grid(t, cols=cols)), scale))


def render_heatmaps(before: np.ndarray, after: np.ndarray | None = None, *, mask: np.ndarray | None = None,
                    path: str | Path | None = None, scale: int = 4, cols: int | None = None) -> bytes:
    """PNG with ``before`` and (if given) ``after`` side by side on ``before``'s scale; lost = blue.

    ``mask`` (True = arrived) has ``after``'s shape. Writes the PNG to ``path`` when given.
    """
    b = _as_channels(before)
    finite = b[np.isfinite(b)]
    lo, hi = (float(finite.min()), float(finite.max())) if finite.size else (0.0, 1.0)
    panels = [hot_colormap(channel_grid(b, cols=cols, lo=lo, hi=hi))]
    if after is not None:
        if np.shape(after) != np.shape(before):
            raise UsageError(f"after has shape {np.shape(after)}, before {np.shape(before)}; they must match")
        panel = hot_colormap(channel_grid(after, cols=cols, lo=lo, hi=hi))
        if mask is not None:
            if np.shape(mask) != np.shape(after):
                raise UsageError(f"mask has shape {np.shape(mask)}, expected {np.shape(after)}")
            lost = channel_grid(~np.asarray(mask, bool), cols=cols, lo=0.0, hi=1.0) == 1.0
            panel[lost] = _LOST
        gap = np.tile(_PAD, (panel.shape[0], 2, 1))
        panels += [gap, panel]
    data = png_bytes(_upscale(np.concatenate(panels, axis=1), scale))
    if path is not None:
        Path(path).write_bytes(data)
    return data
