"""The IDX file format of MNIST, gzipped or not.

Header (big-endian): two zero bytes, a type code, the number of dimensions d, then d
uint32 sizes; then the data, row-major. Type codes: 0x08 uint8, 0x09 int8, 0x0B int16,
0x0C int32, 0x0D float32, 0x0E float64.

A file is a stranger's data, read in bounded memory: the header is read and checked first;
the size it claims is compared with what the file can hold (a raw file: exactly its size; a
gzip file: at most ``MAX_GZIP_RATIO`` times its compressed size, deflate's limit) and with
the memory available; only then is the array allocated, and the data is decompressed into it
chunk by chunk, never past the claimed size.
"""

from __future__ import annotations

import gzip
import math
import os
import zlib
from pathlib import Path

import numpy as np

from ..validation import check_fits_in_memory

IDX_TYPES = {0x08: ">u1", 0x09: ">i1", 0x0B: ">i2", 0x0C: ">i4", 0x0D: ">f4", 0x0E: ">f8"}
MAX_GZIP_RATIO = 1032  # deflate cannot expand one compressed byte into more than ~1032 bytes
_CHUNK = 1 << 20


def _read_exactly(f, n: int, what: str, path: Path) -> bytes:
    data = f.read(n)
    if len(data) != n:
        raise ValueError(f"{path}: truncated IDX {what}: expected {n} bytes, got {len(data)}")
    return data


def read_idx(path) -> np.ndarray:
    """The array stored in an IDX file (``.gz`` or raw), in native byte order."""
    path = Path(path)
    try:
        size = os.path.getsize(path)
        with open(path, "rb") as raw:
            gz = raw.read(2) == b"\x1f\x8b"
            raw.seek(0)
            f = gzip.GzipFile(fileobj=raw, mode="rb") if gz else raw
            try:
                return _read_stream(f, path, size, gz)
            except (EOFError, zlib.error, gzip.BadGzipFile) as e:
                raise ValueError(f"corrupt or truncated gzip file {path}: {e}") from None
    except OSError as e:
        raise OSError(f"cannot read IDX file {path}: {e.strerror or e}") from None


def _read_stream(f, path: Path, size: int, gz: bool) -> np.ndarray:
    magic = f.read(4)
    if len(magic) < 4 or magic[0] != 0 or magic[1] != 0 or magic[2] not in IDX_TYPES:
        raise ValueError(f"{path} is not an IDX file (bad magic number {magic.hex() or 'empty'})")
    ndim = magic[3]
    if ndim == 0:
        raise ValueError(f"{path}: IDX header declares 0 dimensions")
    shape = tuple(int(s) for s in np.frombuffer(_read_exactly(f, 4 * ndim, "header", path), ">u4"))
    dtype = np.dtype(IDX_TYPES[magic[2]])
    header = 4 + 4 * ndim
    payload = math.prod(shape) * dtype.itemsize
    if not gz and header + payload != size:
        what = "truncated" if size < header + payload else "has trailing bytes"
        raise ValueError(f"{path}: IDX file {what}: shape {shape} needs {header + payload} bytes, file has {size}")
    if gz and header + payload > MAX_GZIP_RATIO * size + 1024:
        raise ValueError(f"{path}: IDX header claims shape {shape} ({header + payload} bytes), more than a "
                         f"{size}-byte gzip file can hold; the file is corrupt or hostile")
    check_fits_in_memory(2 * payload, f"{path}: an IDX array of shape {shape} ({dtype.name})")
    out = np.empty(payload, np.uint8)
    view, got = memoryview(out), 0
    while got < payload:
        n = f.readinto(view[got:got + _CHUNK])
        if not n:
            raise ValueError(f"{path}: IDX file truncated: shape {shape} needs {header + payload} bytes, "
                             f"file has {header + got}")
        got += n
    if f.read(1):
        raise ValueError(f"{path}: IDX file has trailing bytes after the {header + payload} its shape {shape} needs")
    return out.view(dtype).reshape(shape).astype(dtype.newbyteorder("="))


def read_idx_pair(images, labels) -> tuple[np.ndarray, np.ndarray]:
    """(X, y) from an images file and a labels file: X float32 (n, rows*cols) in [0, 1], y int64 (n,).

    Labels must be integers (an IDX labels file of floats is refused, not truncated).
    """
    labs = read_idx(labels)
    if labs.ndim != 1:
        raise ValueError(f"{labels}: expected labels of 1 dimension; got shape {labs.shape}")
    if not np.issubdtype(labs.dtype, np.integer):
        raise ValueError(f"{labels}: labels must be integers; the file holds {labs.dtype} values")
    imgs = read_idx(images)
    if imgs.ndim != 3:
        raise ValueError(f"{images}: expected images of 3 dimensions; got shape {imgs.shape}")
    if imgs.shape[0] != labs.shape[0]:
        raise ValueError(f"{images} has {imgs.shape[0]} images but {labels} has {labs.shape[0]} labels")
    X = imgs.reshape(imgs.shape[0], -1).astype(np.float32)
    if imgs.dtype == np.uint8:
        X /= np.float32(255.0)
    elif not np.all(np.isfinite(X)):
        raise ValueError(f"{images} holds NaN or infinity (or values beyond float32's range)")
    return X, labs.astype(np.int64)
