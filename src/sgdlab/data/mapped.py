"""Data larger than memory: rows of .npy files on disk, read only when a batch needs them.

``open_npy(path)`` maps one 2-D .npy file, or every ``*.npy`` file of a directory (shards, in name
order, stacked row-wise). Taking a batch reads only its rows. Every page a read maps counts
towards the process's resident memory, and one page fault may map much more than the row it
reads (Linux maps the cached pages around it, whole large folios on recent kernels). So the
process's file-backed resident memory is measured (``/proc/self/statm``) after every 64 rows
read; once it has grown by ``release_bytes`` the mapping is told ``MADV_DONTNEED``: the pages
leave this process (the OS may keep them cached) and resident memory stays bounded however large
the files are. Where /proc is missing, the mapping is released every ``release_bytes`` of rows.

``fit`` accepts a ``MappedRows`` as X: mini-batches are gathered row by row, evaluation runs in
chunks, and batch gradient descent accumulates the full gradient chunk by chunk.
"""

from __future__ import annotations

import math
import mmap
from pathlib import Path

import numpy as np

PAGE = mmap.PAGESIZE
CHECK_ROWS = 64  # rows read between two measurements of resident memory


def resident_file_bytes() -> int | None:
    """File-backed (and shared) resident memory of this process, or None where /proc is missing."""
    try:
        with open("/proc/self/statm") as f:
            return int(f.read().split()[2]) * PAGE
    except (OSError, IndexError, ValueError):
        return None


class _Shard:
    def __init__(self, path: Path):
        try:
            with open(path, "rb") as f:
                version = np.lib.format.read_magic(f)
                read_header = (
                    np.lib.format.read_array_header_1_0 if version == (1, 0) else np.lib.format.read_array_header_2_0
                )
                shape, fortran, dtype = read_header(f)
                offset = f.tell()
                size = path.stat().st_size
                self.mm = mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ) if size > 0 else None
        except (OSError, ValueError) as e:
            raise ValueError(f"cannot read {path} as .npy: {e}") from None
        if len(shape) != 2 or fortran or dtype.hasobject or dtype.kind not in "fiub":
            raise ValueError(f"{path} must hold a 2-D, C-ordered numeric array; it holds {dtype} of shape {shape}"
                             f"{' in Fortran order' if fortran else ''}")
        if offset + math.prod(shape) * dtype.itemsize > size:
            raise ValueError(
                f"{path} is truncated: shape {shape} of {dtype} needs {offset + math.prod(shape) * dtype.itemsize} "
                f"bytes, file has {size}"
            )
        self.path, self.shape, self.dtype = path, shape, dtype
        self.rows = np.frombuffer(self.mm, dtype=dtype, count=math.prod(shape), offset=offset).reshape(shape)


class MappedRows:
    """A read-only 2-D array on disk, one file or several shards; see the module docstring."""

    def __init__(self, paths, release_bytes: int = 64 << 20):
        self._shards = [_Shard(Path(p)) for p in paths]
        if not self._shards:
            raise ValueError("no .npy files to open")
        first = self._shards[0]
        for s in self._shards[1:]:
            if s.shape[1] != first.shape[1] or s.dtype != first.dtype:
                raise ValueError(f"shard {s.path} holds {s.dtype} rows of {s.shape[1]} columns; "
                                 f"{first.path} holds {first.dtype} rows of {first.shape[1]}")
        self._starts = np.cumsum([0] + [s.shape[0] for s in self._shards])
        self.shape = (int(self._starts[-1]), first.shape[1])
        self.dtype, self.ndim = first.dtype, 2
        self._row_bytes = self.shape[1] * self.dtype.itemsize
        self.release_bytes, self._rows_since_check, self._read_since_release = release_bytes, 0, 0
        self._baseline = resident_file_bytes()

    def __len__(self) -> int:
        return self.shape[0]

    def __repr__(self) -> str:
        return f"MappedRows({len(self._shards)} file(s), shape={self.shape}, dtype={self.dtype})"

    def _count(self, rows: int) -> None:
        """After every CHECK_ROWS rows read, release the mapping if it holds release_bytes or more."""
        self._rows_since_check += rows
        self._read_since_release += rows * self._row_bytes
        if self._rows_since_check < CHECK_ROWS:
            return
        self._rows_since_check = 0
        now = resident_file_bytes()
        grown = self._read_since_release if now is None or self._baseline is None else now - self._baseline
        if grown >= self.release_bytes:
            self.release()

    def release(self) -> None:
        """Drop the pages read so far from this process's resident memory."""
        for s in self._shards:
            if s.mm is not None:
                s.mm.madvise(mmap.MADV_DONTNEED)
        self._read_since_release = 0

    def take(self, idx, axis: int = 0) -> np.ndarray:
        """The rows ``idx`` (any order, repeats allowed) as an in-memory array, read CHECK_ROWS at a time."""
        idx = np.asarray(idx)
        out = np.empty((len(idx), self.shape[1]), self.dtype)
        for a in range(0, len(idx), CHECK_ROWS):
            piece = idx[a:a + CHECK_ROWS]
            if len(self._shards) == 1:
                self._shards[0].rows.take(piece, axis=0, out=out[a:a + len(piece)])
            else:
                which = np.searchsorted(self._starts, piece, side="right") - 1
                for k in np.unique(which):
                    mask = which == k
                    out[a:a + len(piece)][mask] = self._shards[k].rows.take(piece[mask] - self._starts[k], axis=0)
            self._count(len(piece))
        return out

    def __getitem__(self, key) -> np.ndarray:
        """Rows by slice (``X[a:b]`` or ``X[a:b, ...]``), as an in-memory array."""
        if isinstance(key, tuple):
            if len(key) != 2 or key[1] is not Ellipsis:
                raise IndexError("MappedRows takes row slices: X[a:b] or X[a:b, ...]")
            key = key[0]
        if not isinstance(key, slice) or key.step not in (None, 1):
            raise IndexError("MappedRows takes contiguous row slices; use take(indices) for others")
        start, stop, _ = key.indices(self.shape[0])
        return self.take(np.arange(start, stop))

    def chunks(self, rows: int = 8192):
        """In-memory blocks of at most ``rows`` rows, in order."""
        for a in range(0, self.shape[0], rows):
            yield self[a:min(a + rows, self.shape[0])]


def open_npy(path, release_bytes: int = 64 << 20) -> MappedRows:
    """Map one .npy file, or every *.npy file in a directory (shards, stacked in name order)."""
    path = Path(path)
    if path.is_dir():
        files = sorted(path.glob("*.npy"))
        if not files:
            raise ValueError(f"directory {path} holds no .npy shards")
        return MappedRows(files, release_bytes)
    if not path.is_file():
        raise FileNotFoundError(f"data file {path} does not exist")
    return MappedRows([path], release_bytes)
