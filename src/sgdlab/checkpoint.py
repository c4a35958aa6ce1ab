"""Saved work: weights (and training state) in safetensors, everything else as JSON in its header.

``save(path, net)`` writes tensors ``W0, b0, W1, b1, ...`` and two metadata keys: ``sgdlab``, the
JSON header ``{"format", "version", "network": Network.describe(), ...}``, and ``sgdlab_sha256``,
a SHA-256 over the header text *and* the tensors together (required: a file without it is refused).
``save_training(path, net, state)`` adds what an exact resume needs: the optimizer state (momentum
buffers as tensors ``opt.*``), the order of the epoch in progress (``order``), shuffle_once's
permutation (``fixed``), the sampling generator's state, the counters and the history.

Writes go to a temporary file in the same directory, are fsynced, then renamed over the target:
a crash never leaves a broken file in place of a good one; the file gets the user's umask.
Nothing is unpickled. Reading treats the file as a stranger's data: the header is parsed with a
nesting limit and checked against a schema (types, ranges, layer sizes against the tensors the
file really holds, activations, cost and dtype from their registries, counters, permutations)
*before* anything is allocated from it; only then are the tensors read (safetensors bounds them
by the file's size) and the checksum verified. Every refusal is a ValueError saying what is wrong;
nothing loads half-way. A random generator is restored only for the bit generators in
``BIT_GENERATORS``.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import re
import tempfile
from pathlib import Path

import numpy as np
from safetensors import SafetensorError, safe_open
from safetensors.numpy import save as st_save

from .backend import to_numpy

FORMAT = 2
MAX_JSON_DEPTH = 64  # nesting limit of a header (real ones nest at most 8 deep)
BIT_GENERATORS = {"PCG64": np.random.PCG64, "PCG64DXSM": np.random.PCG64DXSM, "MT19937": np.random.MT19937,
                  "Philox": np.random.Philox, "SFC64": np.random.SFC64}
_DTYPES = {"float32": "F32", "float64": "F64"}
_COUNTERS = ("epoch", "step", "seen", "seconds", "position")
# optional counters (absent in files written before 0.3.0): the epoch in progress's running sum behind its
# mean_batch_cost (a number, or null where it was lost) and the examples it covers
_COST_COUNTERS = ("batch_cost_sum", "batch_cost_examples")
_STRING = re.compile(r'"(?:[^"\\]|\\.)*"', re.DOTALL)


class CheckpointError(ValueError):
    """A checkpoint file that cannot be trusted: corrupt, truncated, foreign, tampered or inconsistent."""


def _umask() -> int:
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def atomic_write(path, data: bytes) -> None:
    """Write ``data`` to ``path`` atomically (temp file in the same directory, fsync, rename).

    The file gets the permissions an ordinary ``open`` would give it (0666 less the umask).
    """
    path = Path(path)
    if not path.parent.is_dir():
        raise FileNotFoundError(f"cannot write {path}: directory {path.parent} does not exist")
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        os.fchmod(fd, 0o666 & ~_umask())
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)


def remove_stale_temporaries(path) -> list[Path]:
    """Delete the temporary files an interrupted ``atomic_write`` of ``path`` left behind.

    Call it only while no other process can be writing ``path`` (the CLI holds the run
    directory's lock). Returns the files removed.
    """
    path = Path(path)
    stale = [p for p in path.parent.glob(f".{_glob_escape(path.name)}.*.tmp") if p.is_file()]
    for p in stale:
        p.unlink(missing_ok=True)
    return stale


def _glob_escape(name: str) -> str:
    return re.sub(r"([*?\[])", r"[\1]", name)


def digest(tensors: dict) -> str:
    """SHA-256 over named arrays: each name, dtype, shape and bytes, in name order."""
    h = hashlib.sha256()
    for k in sorted(tensors):
        a = np.ascontiguousarray(tensors[k])
        h.update(f"{k}|{a.dtype.str}|{a.shape}|".encode())
        h.update(a.tobytes())
    return h.hexdigest()


def _signature(header: str, tensors: dict) -> str:
    """The checksum a file carries: SHA-256 over its header text and its tensors together."""
    return hashlib.sha256(b"sgdlab-checkpoint\0" + header.encode() + b"\0" + digest(tensors).encode()).hexdigest()


def _write(path, tensors: dict, meta: dict) -> Path:
    from . import __version__

    tensors = {k: np.ascontiguousarray(v) for k, v in tensors.items()}
    header = json.dumps({"format": FORMAT, "version": __version__, **meta})
    path = Path(path)
    atomic_write(path, st_save(tensors, metadata={"sgdlab": header, "sgdlab_sha256": _signature(header, tensors)}))
    return path


# ----------------------------------------------------------------- reading: parse, check, load, verify
def _parse_header(text: str) -> dict:
    """The JSON header, refused if it nests deeper than MAX_JSON_DEPTH (no recursion blow-up)."""
    stripped = np.frombuffer(_STRING.sub("", text).encode(), np.uint8)
    depth = np.cumsum(np.isin(stripped, (91, 123)).astype(np.int64) - np.isin(stripped, (93, 125)))
    if depth.size and depth.max() > MAX_JSON_DEPTH:
        raise CheckpointError(f"its header nests {int(depth.max())} levels deep (at most {MAX_JSON_DEPTH} allowed)")
    try:
        meta = json.loads(text)
    except (ValueError, RecursionError) as e:
        raise CheckpointError(f"its header is not valid JSON: {e}") from None
    if not isinstance(meta, dict):
        raise CheckpointError(f"its header is a JSON {type(meta).__name__}, not an object")
    return meta


def _need(obj: dict, key: str, types, where: str):
    if key not in obj:
        raise CheckpointError(f"{where} lacks {key!r}")
    v = obj[key]
    if isinstance(v, bool) and bool not in (types if isinstance(types, tuple) else (types,)):
        raise CheckpointError(f"{where}.{key} must be {_names(types)}; got {v!r}")
    if not isinstance(v, types):
        raise CheckpointError(f"{where}.{key} must be {_names(types)}; got {type(v).__name__} {_short(v)}")
    return v


def _names(types) -> str:
    types = types if isinstance(types, tuple) else (types,)
    return " or ".join({int: "an integer", float: "a number", str: "a string", dict: "an object", list: "a list",
                        bool: "true/false", type(None): "null"}[t] for t in types)


def _short(v) -> str:
    s = repr(v)
    return s if len(s) <= 60 else s[:57] + "..."


def _count(obj: dict, key: str, where: str) -> int:
    v = _need(obj, key, int, where)
    if v < 0:
        raise CheckpointError(f"{where}.{key} must be >= 0; got {v}")
    return v


def _check_network(net) -> tuple[list[int], str]:
    from .activations import HIDDEN_ACTIVATIONS, get_activation
    from .costs import get_cost

    if not isinstance(net, dict):
        raise CheckpointError("its header's 'network' must be an object")
    sizes = _need(net, "sizes", list, "network")
    if not (2 <= len(sizes) <= 1000) or not all(
        isinstance(s, int) and not isinstance(s, bool) and s >= 1 for s in sizes
    ):
        raise CheckpointError(f"network.sizes must list 2 to 1000 positive integer layer widths; got {_short(sizes)}")
    act = _need(net, "activation", str, "network")
    if act not in HIDDEN_ACTIVATIONS:
        raise CheckpointError(
            f"network.activation {act!r} is not a hidden activation; valid: {', '.join(HIDDEN_ACTIVATIONS)}"
        )
    out = _need(net, "output_activation", str, "network")
    cost = _need(net, "cost", str, "network")
    dtype = _need(net, "dtype", str, "network")
    if dtype not in _DTYPES:
        raise CheckpointError(f"network.dtype {dtype!r} is not one of {', '.join(_DTYPES)}")
    if "init" in net:
        _need(net, "init", str, "network")
    try:
        get_cost(cost).check(get_activation(out))
    except (ValueError, TypeError, KeyError) as e:
        raise CheckpointError(f"network: {e}") from None
    return sizes, dtype


def _check_tree(node, depth: int, found: list, where: str):
    """An optimizer-state tree: scalars, {"list": [...]}, {"tuple": [...]} or {"tensor": name}."""
    if node is None or isinstance(node, (bool, str)):
        return
    if isinstance(node, (int, float)):
        if isinstance(node, float) and not math.isfinite(node):
            raise CheckpointError(f"{where} holds a non-finite number")
        return
    if not isinstance(node, dict) or len(node) != 1 or next(iter(node)) not in ("list", "tuple", "tensor"):
        raise CheckpointError(f"{where} must be a number, string, null, or an object with one key list/tuple/tensor; "
                              f"got {_short(node)}")
    kind, value = next(iter(node.items()))
    if kind == "tensor":
        if not isinstance(value, str) or not value.startswith("opt."):
            raise CheckpointError(f"{where} names tensor {_short(value)}; optimizer tensors are named opt.*")
        found.append(value)
        return
    if not isinstance(value, list):
        raise CheckpointError(f"{where}.{kind} must be a list")
    for i, v in enumerate(value):
        _check_tree(v, depth + 1, found, f"{where}.{i}")


def _layer_lists(node, layers: int):
    """Every list of ``layers`` (tensor, tensor) pairs in the tree: per-layer buffers like momentum."""
    if not isinstance(node, dict):
        return
    kind, value = next(iter(node.items()))
    if kind == "tensor":
        return
    pairs = [v.get("tuple") if isinstance(v, dict) else None for v in value]
    if (kind == "list" and len(value) == layers and all(isinstance(p, list) and len(p) == 2 for p in pairs)
            and all(isinstance(t, dict) and "tensor" in t for p in pairs for t in p)):
        yield [(p[0]["tensor"], p[1]["tensor"]) for p in pairs]
        return
    for v in value:
        yield from _layer_lists(v, layers)


def _check_header(meta: dict, specs: dict) -> None:
    """The whole header against the schema and against the tensors the file holds (names, dtypes, shapes).

    ``specs`` maps each tensor name to (safetensors dtype, shape), read from the file's own index,
    so nothing is allocated here.
    """
    fmt = meta.get("format")
    if fmt != FORMAT:
        if fmt == 1 or "tensors_sha256" in meta:
            raise CheckpointError("it was written by an older sgdlab (checkpoint format 1), whose header carries no "
                                  "checksum and cannot be verified; train again (or re-save it with that version's "
                                  "weights loaded into this one)")
        raise CheckpointError(f"its header has format {_short(fmt)}; this sgdlab reads format {FORMAT}")
    _need(meta, "version", str, "header")
    sizes, dtype = _check_network(meta.get("network"))
    want = {}
    for i in range(len(sizes) - 1):
        want[f"W{i}"], want[f"b{i}"] = (sizes[i], sizes[i + 1]), (sizes[i + 1],)
    missing = [k for k in want if k not in specs]
    if missing:
        raise CheckpointError(f"it is missing tensors {missing}")
    for k, shape in want.items():
        got_dtype, got_shape = specs[k]
        if tuple(got_shape) != shape:
            raise CheckpointError(f"tensor {k} has shape {tuple(got_shape)} but network.sizes {sizes} needs {shape}")
        if got_dtype != _DTYPES[dtype]:
            raise CheckpointError(f"tensor {k} is {got_dtype} but network.dtype is {dtype} ({_DTYPES[dtype]})")
    for key, types in (("data", str), ("data_sha256", str), ("train_args", dict)):
        if key in meta:
            _need(meta, key, types, "header")
    others = sorted(set(specs) - set(want))
    if "counters" not in meta:
        if others:
            raise CheckpointError(f"it holds weights only, yet has other tensors {others}")
        return
    _check_training(meta, specs, sizes, dtype, want, others)


def _check_training(meta, specs, sizes, dtype, params, others) -> None:
    counters = _need(meta, "counters", dict, "header")
    for k in _COUNTERS:
        if k == "seconds":
            v = _need(counters, k, (int, float), "counters")
            if not (math.isfinite(v) and v >= 0):
                raise CheckpointError(f"counters.seconds must be a finite number >= 0; got {v!r}")
        else:
            _count(counters, k, "counters")
    unknown = set(counters) - set(_COUNTERS) - set(_COST_COUNTERS)
    if unknown:
        raise CheckpointError(f"counters has unknown keys {sorted(unknown)}")
    if counters["seen"] < counters["step"]:
        raise CheckpointError(f"counters: {counters['seen']} examples seen in {counters['step']} updates is impossible")
    if any(k in counters for k in _COST_COUNTERS):
        total = _need(counters, "batch_cost_sum", (int, float, type(None)), "counters")
        if total is not None and not math.isfinite(total):
            raise CheckpointError(f"counters.batch_cost_sum must be a finite number or null; got {total!r}")
        examples = _count(counters, "batch_cost_examples", "counters")
        if examples > counters["seen"] or (counters["position"] == 0 and examples != 0):
            raise CheckpointError(f"counters.batch_cost_examples {examples} is not the examples of the epoch in "
                                  f"progress ({counters['seen']} seen in all, at batch {counters['position']} of it)")
    found = []
    if "opt_state" not in meta:
        raise CheckpointError("header lacks 'opt_state'")
    _check_tree(meta["opt_state"], 0, found, "opt_state")
    opt = sorted(k for k in others if k.startswith("opt."))
    if sorted(found) != opt:
        raise CheckpointError(f"opt_state names tensors {sorted(found)} but the file holds {opt}")
    shapes = {tuple(s) for s in params.values()}
    for k in opt:
        got_dtype, got_shape = specs[k]
        if got_dtype != _DTYPES[dtype] or tuple(got_shape) not in shapes:
            raise CheckpointError(
                f"optimizer tensor {k} ({got_dtype}, shape {tuple(got_shape)}) matches no parameter's "
                f"shape and dtype {dtype}"
            )
    layers = len(sizes) - 1
    for pairs in _layer_lists(meta["opt_state"], layers):
        for i, (w, b) in enumerate(pairs):
            if tuple(specs[w][1]) != params[f"W{i}"] or tuple(specs[b][1]) != params[f"b{i}"]:
                raise CheckpointError(
                    f"optimizer buffers {w}, {b} have shapes {tuple(specs[w][1])}, {tuple(specs[b][1])}; "
                    f"layer {i} needs {params[f'W{i}']}, {params[f'b{i}']}"
                )
    unknown = sorted(set(others) - set(opt) - {"order", "fixed"})
    if unknown:
        raise CheckpointError(f"it holds unknown tensors {unknown}")
    rng = meta.get("rng", "missing")
    if rng == "missing":
        raise CheckpointError("header lacks 'rng'")
    if rng is not None:
        if not isinstance(rng, dict):
            raise CheckpointError("rng must be an object (a bit generator's state) or null")
        name = _need(rng, "bit_generator", str, "rng")
        if name not in BIT_GENERATORS:
            raise CheckpointError(f"rng.bit_generator {_short(name)} is not one of {', '.join(BIT_GENERATORS)}")
    history = meta.get("history")
    n = None
    if history is not None:
        if not isinstance(history, dict):
            raise CheckpointError("history must be an object or null")
        config = _need(history, "config", dict, "history")
        for key in ("epochs", "updates"):
            records = _need(history, key, list, "history")
            if not all(isinstance(r, dict) for r in records):
                raise CheckpointError(f"history.{key} must be a list of objects")
            for r in records:
                bad = [k for k, v in r.items() if v is not None and not isinstance(v, (bool, int, float))]
                if bad:
                    raise CheckpointError(f"history.{key} record field {bad[0]!r} must be a number or null; "
                                          f"got {_short(r[bad[0]])}")
        for r in history["epochs"]:
            e = r.get("epoch")
            if isinstance(e, bool) or not isinstance(e, int) or not 0 <= e <= counters["epoch"] + 1:
                raise CheckpointError(
                    f"history record epoch {_short(e)} is not an integer in [0, {counters['epoch'] + 1}]"
                )
        if "n" in config:
            n = _count(config, "n", "history.config")
    for name in ("order", "fixed"):
        if name not in specs:
            continue
        got_dtype, got_shape = specs[name]
        if n is None:
            raise CheckpointError(f"it holds {name!r} but its history does not record the number of examples n")
        if got_dtype != "I64" or tuple(got_shape) != (n,):
            raise CheckpointError(
                f"tensor {name} must be I64 of shape ({n},); got {got_dtype} of shape {tuple(got_shape)}"
            )
    if "order" not in specs and counters["position"] != 0:
        raise CheckpointError(f"counters.position is {counters['position']} but no epoch is in progress (no 'order')")
    if "order" in specs:
        m = history["config"].get("batch_size")
        if isinstance(m, bool) or not isinstance(m, int) or not 1 <= m <= n:
            raise CheckpointError(f"history.config.batch_size must be an integer in [1, {n}]; got {_short(m)}")
        if counters["position"] > -(-n // m):
            raise CheckpointError(
                f"counters.position {counters['position']} exceeds the {-(-n // m)} batches of an epoch"
            )


def _check_values(meta: dict, tensors: dict) -> None:
    """Checks that need the tensors' values (after loading; bounded by the file's size)."""
    n = None if meta.get("history") is None else meta["history"]["config"].get("n")
    if "fixed" in tensors and not np.array_equal(np.sort(tensors["fixed"]), np.arange(n)):
        raise CheckpointError(f"tensor fixed is not a permutation of 0..{n - 1}")
    if "order" in tensors:
        order = tensors["order"]
        sampling = meta["history"]["config"].get("sampling")
        if sampling == "replacement":
            if order.size and (order.min() < 0 or order.max() >= n):
                raise CheckpointError(f"tensor order has indices outside 0..{n - 1}")
        elif not np.array_equal(np.sort(order), np.arange(n)):
            raise CheckpointError(f"tensor order is not a permutation of 0..{n - 1} (sampling {sampling!r})")


def _read(path) -> tuple[dict, dict]:
    """(header, tensors) of a checkpoint, validated as the module docstring says, or a CheckpointError."""
    path = Path(path)
    if path.is_dir():
        raise IsADirectoryError(f"{path} is a directory, not a checkpoint file (a run's files are "
                                f"{path / 'weights.safetensors'} and {path / 'checkpoint.safetensors'})")
    if not path.is_file():
        raise FileNotFoundError(f"checkpoint {path} does not exist")
    bad = f"{path} is not a valid sgdlab checkpoint"
    try:
        with safe_open(path, framework="numpy") as f:
            md = f.metadata() or {}
            if "sgdlab" not in md:
                raise CheckpointError("it has no sgdlab header (corrupt, truncated or foreign)")
            meta = _parse_header(md["sgdlab"])
            specs = {k: (f.get_slice(k).get_dtype(), f.get_slice(k).get_shape()) for k in f.keys()}
            _check_header(meta, specs)
            if "sgdlab_sha256" not in md:
                raise CheckpointError("it carries no checksum (sgdlab_sha256)")
            tensors = {k: f.get_tensor(k) for k in f.keys()}
    except CheckpointError as e:
        raise CheckpointError(f"{bad}: {e}") from None
    except (SafetensorError, OSError, TypeError, ValueError, MemoryError) as e:
        raise CheckpointError(f"{bad} (corrupt, truncated or foreign): {e}") from None
    if _signature(md["sgdlab"], tensors) != md["sgdlab_sha256"]:
        raise CheckpointError(f"{path}: checksum mismatch: its header or tensors were modified or corrupted after it "
                              "was written")
    try:
        _check_values(meta, tensors)
    except CheckpointError as e:
        raise CheckpointError(f"{bad}: {e}") from None
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

    >>> import sgdlab, tempfile, pathlib
    >>> path = sgdlab.save(pathlib.Path(tempfile.mkdtemp()) / "w.safetensors", sgdlab.Network([2, 1], seed=0))
    >>> sgdlab.load(path).sizes
    (2, 1)
    """
    if state is not None:
        return save_training(path, net, state, extra=extra)
    return _write(path, _params(net), {"network": net.describe(), **(extra or {})})


def read(path) -> tuple[dict, list]:
    """(metadata, [(W, b), ...]) from a file written by ``save`` or ``save_training``, validated."""
    meta, tensors = _read(path)
    layers = len(meta["network"]["sizes"]) - 1
    return meta, [(tensors[f"W{i}"], tensors[f"b{i}"]) for i in range(layers)]


def _network(path, meta: dict, tensors: dict, backend: str, device: str | None = None):
    from .network import Network

    layers = len(meta["network"]["sizes"]) - 1
    params = [(tensors[f"W{i}"], tensors[f"b{i}"]) for i in range(layers)]
    try:
        return Network.from_params(meta["network"], params, backend=backend, device=device)
    except (KeyError, ValueError) as e:
        raise CheckpointError(f"{path} does not describe a valid network: {e}") from None


def load(path, backend: str = "numpy", device: str | None = None):
    """The Network saved at ``path``, its parameters placed on ``device`` of ``backend``."""
    meta, tensors = _read(path)
    return _network(path, meta, tensors, backend, device)


# ----------------------------------------------------------------- training state
def _split(obj, key: str, tensors: dict):
    """A JSON tree of ``obj`` with its arrays moved into ``tensors`` (named by their path)."""
    if isinstance(obj, (list, tuple)):
        return {
            "list" if isinstance(obj, list) else "tuple": [_split(v, f"{key}.{i}", tensors) for i, v in enumerate(obj)]
        }
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
            "counters": {**{k: getattr(state, k) for k in _COUNTERS}, **_cost_counters(state)},
            "rng": state.rng.bit_generator.state if state.rng is not None else None,
            "history": state.history.to_dict() if state.history is not None else None, **(extra or {})}
    return _write(path, tensors, json.loads(json.dumps(meta, default=_json_default)))


def _cost_counters(state) -> dict:
    """The epoch's running batch-cost sum as saved: a non-finite one (after a divergence) counts as lost."""
    total = state.batch_cost_sum
    if total is not None and not math.isfinite(total):
        total = None
    return {"batch_cost_sum": total, "batch_cost_examples": state.batch_cost_examples}


def load_training(path, backend: str = "numpy", device: str | None = None):
    """(network, TrainState, metadata) from a file written by ``save_training``; the parameters and the
    optimizer's tensors (momentum buffers) go to ``device`` of ``backend``."""
    from .train import History, TrainState

    meta, tensors = _read(path)
    if "counters" not in meta:
        raise CheckpointError(f"{path} holds weights only, no training state to resume from")
    net = _network(path, meta, tensors, backend, device)
    state = TrainState(**meta["counters"])
    if "batch_cost_sum" not in meta["counters"] and state.position > 0:
        state.batch_cost_sum = None  # a file from before 0.3.0, saved mid-epoch: that epoch's sum is lost
    state.order, state.fixed = tensors.get("order"), tensors.get("fixed")
    if meta["rng"] is not None:
        bit_generator = BIT_GENERATORS[meta["rng"]["bit_generator"]]()
        try:
            bit_generator.state = meta["rng"]
        except (ValueError, TypeError, KeyError, OverflowError) as e:
            raise CheckpointError(f"{path}: rng holds no valid {meta['rng']['bit_generator']} state ({e})") from None
        state.rng = np.random.Generator(bit_generator)
    state.opt_state = _join(meta["opt_state"], tensors, net.backend)  # Backend.asarray: onto the device
    if meta["history"] is not None:
        state.history = History.from_dict(meta["history"])
    return net, state, meta


def _json_default(o):
    if isinstance(o, np.generic):
        return o.item()
    if isinstance(o, np.ndarray):
        return o.tolist()
    raise TypeError(f"{type(o).__name__} is not JSON serialisable")
