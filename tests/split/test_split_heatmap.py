"""Heat maps: the PNG decodes (chunks, CRCs, zlib), has the expected size, and marks lost elements."""

from __future__ import annotations

import struct
import zlib

import numpy as np
import pytest

from meshlearn.errors import UsageError
from meshlearn.split.heatmap import channel_grid, heatmap_png, hot_colormap, png_bytes, render_heatmaps


def decode_png(data: bytes) -> np.ndarray:
    """Minimal decoder for the 8-bit RGB, filter-0 PNGs we write; checks every CRC."""
    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    pos, idat, size = 8, b"", None
    while pos < len(data):
        (length,) = struct.unpack(">I", data[pos : pos + 4])
        kind, body = data[pos + 4 : pos + 8], data[pos + 8 : pos + 8 + length]
        (crc,) = struct.unpack(">I", data[pos + 8 + length : pos + 12 + length])
        assert crc == zlib.crc32(kind + body)
        if kind == b"IHDR":
            w, h, depth, colour = struct.unpack(">IIBB", body[:10])
            assert (depth, colour) == (8, 2)
            size = (h, w)
        elif kind == b"IDAT":
            idat += body
        pos += 12 + length
    h, w = size
    rows = np.frombuffer(zlib.decompress(idat), np.uint8).reshape(h, 1 + 3 * w)
    assert (rows[:, 0] == 0).all()
    return rows[:, 1:].reshape(h, w, 3)


def test_grid_tiles_channels_with_padding():
    t = np.arange(4 * 3 * 5, dtype=np.float32).reshape(4, 3, 5)
    grid = channel_grid(t, pad=1)
    assert grid.shape == (2 * 4 + 1, 2 * 6 + 1)
    assert np.isnan(grid[0]).all() and np.nanmin(grid) == 0.0 and np.nanmax(grid) == 1.0
    assert channel_grid(np.ones(10, np.float32)).shape == (3 * 1 + 2, 4 + 2)  # flat → near square


def test_png_decodes_with_the_expected_size_and_colours():
    t = np.random.default_rng(0).random((8, 4, 4)).astype(np.float32)
    img = decode_png(heatmap_png(t, scale=3))
    assert img.shape == (3 * (3 * 5 + 1), 3 * (3 * 5 + 1), 3)
    assert tuple(img[0, 0]) == (96, 96, 96)  # padding is grey
    assert tuple(hot_colormap(np.array([0.0]))[0]) == (0, 0, 0)
    assert tuple(hot_colormap(np.array([1.0]))[0]) == (255, 255, 255)


def test_before_after_panels_mark_lost_elements_blue(tmp_path):
    before = np.random.default_rng(1).random((4, 4, 4)).astype(np.float32) + 0.5
    mask = np.ones_like(before, bool)
    mask[0, 0, 0] = False
    after = np.where(mask, before, 0)
    path = tmp_path / "cut.png"
    data = render_heatmaps(before, after, mask=mask, path=path, scale=1)
    assert path.read_bytes() == data
    img = decode_png(data)
    panel_w = 2 * 5 + 1
    assert img.shape == (panel_w, 2 * panel_w + 2, 3)
    right = img[:, panel_w + 2 :]
    assert tuple(right[1, 1]) == (40, 90, 255)  # the lost element
    assert tuple(img[1, 1]) != (40, 90, 255)


def test_bad_inputs():
    with pytest.raises(UsageError, match="shape"):
        channel_grid(np.zeros((2, 2)))
    with pytest.raises(UsageError, match="match"):
        render_heatmaps(np.zeros((1, 2, 2)), np.zeros((1, 3, 3)))
    with pytest.raises(UsageError, match="scale"):
        heatmap_png(np.zeros((1, 2, 2)), scale=0)
    with pytest.raises(UsageError):
        png_bytes(np.zeros((2, 2)))
