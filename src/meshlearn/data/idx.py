"""The IDX file format (MNIST, Fashion-MNIST), parsed with numpy only.

Layout: two zero bytes, a type code byte, a dimension count byte, then one big-endian
uint32 per dimension, then the values in big-endian C order. Files may be gzipped
(``.gz``). See http://yann.lecun.com/exdb/mnist/ (section "FILE FORMATS").
"""

from __future__ import annotations

import gzip
import math
import zlib
from pathlib import Path

import numpy as np

from meshlearn.errors import DataError

__all__ = ["IDX_FILES", "read_idx", "find_idx_files"]

# type code -> big-endian numpy dtype
_IDX_DTYPES = {0x08: ">u1", 0x09: ">i1", 0x0B: ">i2", 0x0C: ">i4", 0x0D: ">f4", 0x0E: ">f8"}

# role -> standard file name (without the optional .gz)
IDX_FILES = {
    "train_images": "train-images-idx3-ubyte",
    "train_labels": "train-labels-idx1-ubyte",
    "test_images": "t10k-images-idx3-ubyte",
    "test_labels": "t10k-labels-idx1-ubyte",
}


def _read_bytes(path: Path) -> bytes:
    try:
        if path.suffix == ".gz":
            with gzip.open(path, "rb") as fh:
                return fh.read()
        return path.read_bytes()
    except (OSError, EOFError, zlib.error) as exc:  # BadGzipFile is an OSError
        raise DataError(f"{path}: cannot read ({exc}); re-download the file") from exc


def read_idx(path: str | Path) -> np.ndarray:
    """Return the array stored in one IDX file (native byte order)."""
    path = Path(path)
    raw = _read_bytes(path)
    if len(raw) < 4 or raw[0] != 0 or raw[1] != 0 or raw[2] not in _IDX_DTYPES:
        raise DataError(
            f"{path}: bad IDX magic number {raw[:4].hex() or '(empty file)'}; expected 0000 + type code "
            f"({', '.join(hex(c) for c in _IDX_DTYPES)}) + ndim; is this really an IDX file?"
        )
    ndim, header = raw[3], 4 + 4 * raw[3]
    if len(raw) < header:
        raise DataError(f"{path}: IDX header truncated ({len(raw)} bytes, need {header} for {ndim} dims)")
    dims = tuple(int(d) for d in np.frombuffer(raw, ">u4", count=ndim, offset=4))
    dtype = np.dtype(_IDX_DTYPES[raw[2]])
    expected = math.prod(dims) * dtype.itemsize  # Python ints: dims of a corrupt header cannot overflow
    if len(raw) - header != expected:
        raise DataError(
            f"{path}: IDX body has {len(raw) - header} bytes but dims {dims} of {dtype} need {expected}; "
            "the file is truncated or corrupt"
        )
    return np.frombuffer(raw, dtype, offset=header).reshape(dims).astype(dtype.newbyteorder("="))


def find_idx_files(directory: str | Path, dataset: str) -> dict[str, Path]:
    """Map each role in IDX_FILES to an existing file (plain or ``.gz``) in ``directory``."""
    directory = Path(directory).expanduser()
    found: dict[str, Path] = {}
    for role, name in IDX_FILES.items():
        for candidate in (directory / name, directory / f"{name}.gz"):
            if candidate.is_file():
                found[role] = candidate
                break
    missing = [IDX_FILES[r] for r in IDX_FILES if r not in found]
    if missing:
        raise DataError(
            f"{dataset}: missing IDX file(s) {', '.join(missing)} in {directory}. "
            f"Expected the four files {', '.join(IDX_FILES.values())} (each optionally gzipped as .gz) "
            "directly in that directory; download them and pass path=<that directory>"
        )
    return found
