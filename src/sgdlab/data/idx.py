"""The IDX file format of MNIST, gzipped or not.

Header (big-endian): two zero bytes, a type code, the number of dimensions d, then d
uint32 sizes; then the data, row-major. Type codes: 0x08 uint8, 0x09 int8, 0x0B int16,
0x0C int32, 0x0D float32, 0x0E float64.
"""

from __future__ import annotations

import gzip
import math
import zlib
from pathlib import Path

import numpy as np

IDX_TYPES = {0x08: ">u1", 0x09: ">i1", 0x0B: ">i2", 0x0C: ">i4", 0x0D: ">f4", 0x0E: ">f8"}


def _read_bytes(path: Path) -> bytes:
    try:
        raw = path.read_bytes()
    except OSError as e:
        raise OSError(f"cannot read IDX file {path}: {e.strerror or e}") from None
    if raw[:2] == b"\x1f\x8b":
        try:
            return gzip.decompress(raw)
        except (EOFError, OSError, zlib.error) as e:
            raise ValueError(f"corrupt or truncated gzip file {path}: {e}") from None
    return raw


def read_idx(path) -> np.ndarray:
    """The array stored in an IDX file (``.gz`` or raw), in native byte order."""
    path = Path(path)
    raw = _read_bytes(path)
    if len(raw) < 4 or raw[0] != 0 or raw[1] != 0 or raw[2] not in IDX_TYPES:
        raise ValueError(f"{path} is not an IDX file (bad magic number {raw[:4].hex() or 'empty'})")
    ndim = raw[3]
    header = 4 + 4 * ndim
    if ndim == 0 or len(raw) < header:
        raise ValueError(f"{path}: truncated IDX header")
    shape = tuple(int(s) for s in np.frombuffer(raw, ">u4", ndim, 4))
    dtype = np.dtype(IDX_TYPES[raw[2]])
    expected = header + math.prod(shape) * dtype.itemsize
    if len(raw) != expected:
        what = "truncated" if len(raw) < expected else "has trailing bytes"
        raise ValueError(f"{path}: IDX file {what}: shape {shape} needs {expected} bytes, file has {len(raw)}")
    return np.frombuffer(raw, dtype, offset=header).reshape(shape).astype(dtype.newbyteorder("="))


def read_idx_pair(images, labels) -> tuple[np.ndarray, np.ndarray]:
    """(X, y) from an images file and a labels file: X float32 (n, rows*cols) in [0, 1], y int64 (n,)."""
    imgs, labs = read_idx(images), read_idx(labels)
    if imgs.ndim != 3 or labs.ndim != 1:
        raise ValueError(f"expected images of 3 dimensions and labels of 1; got {imgs.shape} and {labs.shape}")
    if imgs.shape[0] != labs.shape[0]:
        raise ValueError(f"{images} has {imgs.shape[0]} images but {labels} has {labs.shape[0]} labels")
    X = imgs.reshape(imgs.shape[0], -1).astype(np.float32)
    if imgs.dtype == np.uint8:
        X /= np.float32(255.0)
    return X, labs.astype(np.int64)
