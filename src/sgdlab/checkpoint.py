"""Saved work: weights (and training state) in safetensors, everything else as JSON in its header.

``save(path, net)`` writes tensors ``W0, b0, W1, b1, ...`` and the metadata key ``sgdlab``:
``{"format", "version", "network": Network.describe(), "tensors_sha256", ...}``.
``save_training(path, net, state)`` adds what an exact resume needs: the optimizer state (momentum
buffers as tensors ``opt.*``), the order of the epoch in progress (``order``), shuffle_once's
permutation (``fixed``), the sampling generator's state, the counters and the history.

Writes go to a temporary file in the same directory, are fsynced, then renamed over the target:
a crash never leaves a broken file in place of a good one. Nothing is unpickled. A file is refused
with a clear error when it is truncated or corrupt, lacks a tensor, has the wrong shapes, or its
tensors do not match the SHA-256 recorded in its header.
"""

from __future__ import annotations

import hashlib
import json
import os
import tempfile
from pathlib import Path

import numpy as np
from safetensors import SafetensorError, safe_open
from safetensors.numpy import save as st_save

from .backend import to_numpy

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


def digest(tensors: dict) -> str:
    """SHA-256 over named arrays: each name, dtype, shape and bytes, in name order."""
    h = hashlib.sha256()
    for k in sorted(tensors):
        a = np.ascontiguousarray(tensors[k])
        h.update(f"{k}|{a.dtype.str}|{a.shape}|".encode())
        h.update(a.tobytes())
    return h.hexdigest()


def _write(path, tensors: dict, meta: dict) -> Path:
    from . import __version__

    tensors = {k: np.ascontiguousarray(v) for k, v in tensors.items()}
    meta = {"format": FORMAT, "version": __version__, **meta, "tensors_sha256": digest(tensors)}
    path = Path(path)
    atomic_write(path, st_save(tensors, metadata={"sgdlab": json.dumps(meta)}))
    return path


def _read(path) -> tuple[dict, dict]:
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
    if "tensors_sha256" in meta and digest(tensors) != meta["tensors_sha256"]:
        raise ValueError(f"{path}: checksum mismatch: its tensors were modified or corrupted after it was written")
    return meta, tensors


def _params(net) -> dict:
    out = {}
    for i, (W, b) in enumerate(net.numpy_params()):
        out[f"W{i}"], out[f"b{i}"] = W, b
    return out


def save(path, net, *, state=None, extra: dict | None = None) -> Path:
    """Save ``net``'s weights and architecture to ``path`` (a .safetensors file), atomically.

    With ``state`` (a ``TrainState``) the file also holds everything needed to resume training
    exactly; ``load_training(path)`` gives the network and the state back.
    """
    if state is not None:
        return save_training(path, net, state, extra=extra)
    return _write(path, _params(net), {"network": net.describe(), **(extra or {})})


def read(path) -> tuple[dict, list]:
    """(metadata, [(W, b), ...]) from a file written by ``save`` or ``save_training``, validated."""
    meta, tensors = _read(path)
    layers = len(meta["network"]["sizes"]) - 1
    return meta, [(tensors[f"W{i}"], tensors[f"b{i}"]) for i in range(layers)]


def load(path, backend: str = "numpy", device: str | None = None):
    """The Network saved at ``path``, its parameters placed on ``device`` of ``backend``."""
    from .network import Network

    meta, params = read(path)
    try:
        return Network.from_params(meta["network"], params, backend=backend, device=device)
    except (KeyError, ValueError) as e:
        raise ValueError(f"{path} does not describe a valid network: {e}") from None


# ----------------------------------------------------------------- training state
def _split(obj, key: str, tensors: dict):
    """A JSON tree of ``obj`` with its arrays moved into ``tensors`` (named by their path)."""
    if isinstance(obj, (list, tuple)):
        return {"list" if isinstance(obj, list) else "tuple": [_split(v, f"{key}.{i}", tensors) for i, v in enumerate(obj)]}
    if obj is None or isinstance(obj, (bool, int, float, str)):
        return obj
    if isinstance(obj, np.generic):
        return obj.item()
    tensors[key] = to_numpy(obj)
    return {"tensor": key}


def _join(tree, tensors: dict, xp):
    if isinstance(tree, dict):
        if "tensor" in tree:
            return xp.asarray(tensors[tree["tensor"]])
        items = [_join(v, tensors, xp) for v in tree.get("list", tree.get("tuple", []))]
        return items if "list" in tree else tuple(items)
    return tree


def save_training(path, net, state, *, extra: dict | None = None) -> Path:
    """Save the network and a ``TrainState`` so that ``fit`` can continue exactly (see module doc)."""
    tensors = _params(net)
    opt_tree = _split(state.opt_state, "opt", tensors)
    for name in ("order", "fixed"):
        if getattr(state, name) is not None:
            tensors[name] = np.asarray(getattr(state, name), dtype=np.int64)
    meta = {"network": net.describe(), "opt_state": opt_tree,
            "counters": {k: getattr(state, k) for k in ("epoch", "step", "seen", "seconds", "position")},
            "rng": state.rng.bit_generator.state if state.rng is not None else None,
            "history": state.history.to_dict() if state.history is not None else None, **(extra or {})}
    return _write(path, tensors, json.loads(json.dumps(meta, default=_json_default)))


def load_training(path, backend: str = "numpy", device: str | None = None):
    """(network, TrainState, metadata) from a file written by ``save_training``; the parameters and the
    optimizer's tensors (momentum buffers) go to ``device`` of ``backend``."""
    from .train import History, TrainState

    net = load(path, backend, device)
    meta, tensors = _read(path)
    if "counters" not in meta:
        raise ValueError(f"{path} holds weights only, no training state to resume from")
    state = TrainState(**meta["counters"])
    state.order, state.fixed = tensors.get("order"), tensors.get("fixed")
    if meta.get("rng") is not None:
        bit_generator = getattr(np.random, meta["rng"]["bit_generator"])()
        bit_generator.state = meta["rng"]
        state.rng = np.random.Generator(bit_generator)
    state.opt_state = _join(meta["opt_state"], tensors, net.backend)  # Backend.asarray: onto the device
    if meta.get("history") is not None:
        state.history = History.from_dict(meta["history"])
    return net, state, meta


def _json_default(o):
    if isinstance(o, np.generic):
        return o.item()
    if isinstance(o, np.ndarray):
        return o.tolist()
    raise TypeError(f"{type(o).__name__} is not JSON serialisable")
