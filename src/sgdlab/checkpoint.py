"""Saved networks: weights in safetensors, the architecture as JSON in the same file's header.

A file written by ``save`` holds tensors ``W0, b0, W1, b1, ...`` and the metadata key
``sgdlab`` with ``{"network": Network.describe(), "format": 1, "version": ...}`` (plus any
``extra`` JSON the caller adds). Writes go to a temporary file in the same directory, are
fsynced, then renamed over the target: a crash never leaves a broken file in place of a good
one. Nothing is unpickled; a file that fails validation is refused with a clear error.
"""

from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path

import numpy as np
from safetensors import SafetensorError, safe_open
from safetensors.numpy import save as st_save

FORMAT = 1


def atomic_write(path, data: bytes) -> None:
    """Write ``data`` to ``path`` atomically (temp file in the same directory, fsync, rename)."""
    path = Path(path)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)


def save(path, net, *, extra: dict | None = None) -> Path:
    """Save ``net``'s weights and architecture to ``path`` (a .safetensors file), atomically."""
    from . import __version__

    tensors = {}
    for i, (W, b) in enumerate(net.numpy_params()):
        tensors[f"W{i}"], tensors[f"b{i}"] = np.ascontiguousarray(W), np.ascontiguousarray(b)
    meta = {"format": FORMAT, "version": __version__, "network": net.describe(), **(extra or {})}
    path = Path(path)
    atomic_write(path, st_save(tensors, metadata={"sgdlab": json.dumps(meta)}))
    return path


def read(path) -> tuple[dict, list]:
    """(metadata, [(W, b), ...]) from a file written by ``save``, validated."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"checkpoint {path} does not exist")
    try:
        with safe_open(path, framework="numpy") as f:
            meta = json.loads(f.metadata()["sgdlab"])
            tensors = {k: f.get_tensor(k) for k in f.keys()}
        layers = len(meta["network"]["sizes"]) - 1
    except (SafetensorError, OSError, KeyError, TypeError, json.JSONDecodeError) as e:
        raise ValueError(f"{path} is not a valid sgdlab checkpoint (corrupt, truncated or foreign): {e}") from None
    missing = [k for i in range(layers) for k in (f"W{i}", f"b{i}") if k not in tensors]
    if missing:
        raise ValueError(f"{path} is missing tensors {missing}")
    return meta, [(tensors[f"W{i}"], tensors[f"b{i}"]) for i in range(layers)]


def load(path, backend: str = "numpy"):
    """The Network saved at ``path``."""
    from .network import Network

    meta, params = read(path)
    try:
        return Network.from_params(meta["network"], params, backend=backend)
    except (KeyError, ValueError) as e:
        raise ValueError(f"{path} does not describe a valid network: {e}") from None
