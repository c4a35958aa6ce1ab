"""Checkpoints are a stranger's data: every hostile header or tensor is refused clearly, before allocating."""

import copy
import json

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from safetensors import safe_open
from safetensors.numpy import save_file

import sgdlab
from sgdlab.checkpoint import CheckpointError, _signature, load_training, save_training
from sgdlab.train import TrainState


@pytest.fixture(scope="module")
def saved(tmp_path_factory):
    """A mid-epoch training checkpoint with momentum buffers, order and shuffle_once's permutation."""
    rng = np.random.default_rng(0)
    X, y = rng.standard_normal((30, 3)), rng.integers(0, 2, 30)

    class Stop(sgdlab.Callback):
        def on_update_end(self, r):
            if r["update"] == 5:
                raise sgdlab.StopTraining

    net, state = sgdlab.Network([3, 4, 2], seed=0), TrainState()
    sgdlab.fit(net, X, y, batch_size=4, momentum=0.9, sampling="shuffle_once", epochs=3, seed=1, state=state,
               callbacks=[Stop()])
    path = save_training(
        tmp_path_factory.mktemp("ck") / "ck.safetensors", net, state, extra={"train_args": {"lr": 3.0}}
    )
    with safe_open(path, framework="numpy") as f:
        header, tensors = json.loads(f.metadata()["sgdlab"]), {k: f.get_tensor(k) for k in f.keys()}
    return path, header, tensors


def write(path, header, tensors, *, sign=True, text=None):
    text = json.dumps(header) if text is None else text
    meta = {"sgdlab": text}
    if sign:
        meta["sgdlab_sha256"] = _signature(text, tensors)
    save_file(tensors, str(path), metadata=meta)
    return path


def test_the_unmodified_checkpoint_loads(saved, tmp_path):
    path, header, tensors = saved
    net, state, meta = load_training(write(tmp_path / "ok.safetensors", header, tensors))
    assert state.position == 5 and state.order is not None and state.fixed is not None and len(state.opt_state[1]) == 2
    assert state.batch_cost_examples == 5 * 4 and state.batch_cost_sum > 0  # the epoch in progress's running sum


def test_an_edited_header_fails_the_checksum(saved, tmp_path):
    path, header, tensors = saved
    raw = path.read_bytes().replace(b'\\"lr\\": 3.0', b'\\"lr\\": 9.0')
    assert raw != path.read_bytes()
    (tmp_path / "e.safetensors").write_bytes(raw)
    with pytest.raises(ValueError, match="checksum mismatch: its header or tensors were modified"):
        load_training(tmp_path / "e.safetensors")


def test_a_missing_checksum_or_old_format_is_refused(saved, tmp_path):
    _, header, tensors = saved
    with pytest.raises(ValueError, match="carries no checksum"):
        load_training(write(tmp_path / "a.safetensors", header, tensors, sign=False))
    old = {**header, "format": 1, "tensors_sha256": "0" * 64}
    with pytest.raises(ValueError, match="older sgdlab \\(checkpoint format 1\\)"):
        sgdlab.load(write(tmp_path / "b.safetensors", old, tensors, sign=False))


def _set(d, path, value):
    for k in path[:-1]:
        d = d[k]
    if value is KeyError:
        del d[path[-1]]
    else:
        d[path[-1]] = value


HOSTILE_HEADERS = [
    (("network", "activation"), "softmax", "not a hidden activation"),
    (("network", "activation"), "__import__", "not a hidden activation"),
    (("network", "output_activation"), "nope", "unknown activation"),
    (("network", "dtype"), "float16", "network.dtype 'float16'"),
    (("network", "cost"), "hinge", "unknown cost"),
    (("network", "sizes"), [3, 100000000, 2], r"tensor W0 has shape \(3, 4\) but network.sizes"),
    (("network", "sizes"), [3, True, 2], "positive integer layer widths"),
    (("network", "sizes"), "3,4,2", "must be a list"),
    (("network",), KeyError, "'network' must be an object"),
    (("counters", "epoch"), -1, "counters.epoch must be >= 0"),
    (("counters", "step"), "5", "counters.step must be an integer"),
    (("counters", "seconds"), float("nan"), "counters.seconds must be a finite number"),
    (("counters", "position"), 99, "exceeds the 8 batches"),
    (("counters", "seen"), KeyError, "counters lacks 'seen'"),
    (("counters",), [1, 2], "counters must be an object"),
    (("counters", "batch_cost_sum"), "1.5", "counters.batch_cost_sum must be an integer or a number or null"),
    (("counters", "batch_cost_sum"), True, "counters.batch_cost_sum must be"),
    (("counters", "batch_cost_sum"), float("inf"), "batch_cost_sum must be a finite number or null"),
    (("counters", "batch_cost_examples"), KeyError, "counters lacks 'batch_cost_examples'"),
    (("counters", "batch_cost_examples"), -1, "counters.batch_cost_examples must be >= 0"),
    (("counters", "batch_cost_examples"), 10 ** 6, "is not the examples of the epoch in progress"),
    (("counters", "batch_cost_now"), 1, r"counters has unknown keys \['batch_cost_now'\]"),
    (("opt_state",), KeyError, "lacks 'opt_state'"),
    (("opt_state",), {"tensor": "W0"}, "optimizer tensors are named opt"),
    (("opt_state",), {"tuple": []}, r"opt_state names tensors \[\] but the file holds"),
    (("rng",), KeyError, "lacks 'rng'"),
    (("rng", "bit_generator"), "seed", "rng.bit_generator 'seed' is not one of"),
    (("rng", "bit_generator"), KeyError, "rng lacks 'bit_generator'"),
    (("rng", "state"), {"state": "x", "inc": 1}, "rng holds no valid PCG64 state"),
    (("history", "config", "n"), 31, r"tensor order must be I64 of shape \(31,\)"),
    (("history", "epochs"), [{"epoch": "0"}], "record field .epoch. must be a number"),
    (("history", "epochs"), [{"epoch": 7}], r"history record epoch 7 is not an integer in \[0, 1\]"),
    (("history", "epochs"), [{"epoch": 0, "val_cost": "abc"}], "record field .val_cost. must be a number"),
    (("history", "config", "batch_size"), 0, "batch_size must be an integer in"),
    (("format",), 7, "format 7"),
    (("train_args",), "lr=30", "train_args must be an object"),
]


@pytest.mark.parametrize(
    "path,value,match", HOSTILE_HEADERS, ids=[f"{'.'.join(p)}={v!r}"[:40] for p, v, _ in HOSTILE_HEADERS]
)
def test_hostile_headers_are_refused_even_with_a_valid_checksum(saved, tmp_path, path, value, match):
    _, header, tensors = saved
    header = copy.deepcopy(header)
    _set(header, path, value)
    state = np.random.get_state()[1].copy()
    with pytest.raises(ValueError, match=match):
        load_training(write(tmp_path / "h.safetensors", header, tensors))
    assert np.array_equal(np.random.get_state()[1], state)  # nothing named in the file was called


def _tensors(tensors, **changes):
    out = dict(tensors)
    for k, v in changes.items():
        if v is None:
            del out[k]
        else:
            out[k] = v
    return out


HOSTILE_TENSORS = [
    ({"W0": np.zeros((3, 4), np.float16)}, "tensor W0 is F16 but network.dtype is float32"),
    ({"b1": np.zeros(2, np.int32)}, "tensor b1 is I32"),
    ({"W1": np.zeros((4, 2), bool)}, "tensor W1 is BOOL"),
    ({"opt.1.0.0": np.zeros((1, 4), np.float32)}, "matches no parameter's shape"),
    ({"opt.1.0.0": np.zeros(4, np.float32)}, r"layer 0 needs \(3, 4\)"),
    ({"opt.1.1.1": None}, "opt_state names tensors"),
    ({"fixed": np.zeros(30, np.int64)}, "fixed is not a permutation of 0..29"),
    ({"order": -np.arange(30, dtype=np.int64)}, "order is not a permutation"),
    ({"order": np.arange(30, dtype=np.int32)}, "tensor order must be I64"),
    ({"extra": np.zeros(1, np.float32)}, r"unknown tensors \['extra'\]"),
    ({"b0": None}, r"missing tensors \['b0'\]"),
]


@pytest.mark.parametrize("changes,match", HOSTILE_TENSORS, ids=[m[:30] for _, m in HOSTILE_TENSORS])
def test_hostile_tensors_are_refused_even_with_a_valid_checksum(saved, tmp_path, changes, match):
    _, header, tensors = saved
    with pytest.raises(ValueError, match=match):
        load_training(write(tmp_path / "t.safetensors", header, _tensors(tensors, **changes)))


def test_deeply_nested_header_is_refused_without_recursion_error(saved, tmp_path):
    _, header, tensors = saved
    text = json.dumps({**header, "note": "x"}).replace('"x"', "[" * 100000 + "]" * 100000)
    with pytest.raises(ValueError, match="nests 100001 levels deep"):
        sgdlab.load(write(tmp_path / "d.safetensors", header, tensors, text=text))
    with pytest.raises(ValueError, match="not valid JSON"):
        sgdlab.load(write(tmp_path / "j.safetensors", header, tensors, text="{not json"))


def test_a_small_file_claiming_a_huge_network_allocates_nothing(saved, tmp_path, memory_limit):
    _, header, tensors = saved
    weights = {
        "format": 2,
        "version": header["version"],
        "network": {**header["network"], "sizes": [64, 100000000, 10]},
    }
    with pytest.raises(ValueError, match="tensor W0 has shape"):
        sgdlab.load(write(tmp_path / "big.safetensors", weights, {k: tensors[k] for k in ("W0", "b0", "W1", "b1")}))


json_values = st.recursive(st.none() | st.booleans() | st.integers(-2**70, 2**70) | st.floats() | st.text(max_size=8),
                           lambda c: st.lists(c, max_size=4) | st.dictionaries(st.text(max_size=8), c, max_size=4),
                           max_leaves=12)


def _paths(d, prefix=()):
    yield prefix
    if isinstance(d, dict):
        for k, v in d.items():
            yield from _paths(v, (*prefix, k))
    elif isinstance(d, list):
        for i, v in enumerate(d):
            yield from _paths(v, (*prefix, i))


@settings(max_examples=150, deadline=None, suppress_health_check=list(HealthCheck))
@given(data=st.data())
def test_fuzzed_headers_load_or_are_refused_in_bounded_memory(saved, tmp_path_factory, memory_limit, data):
    _, header, tensors = saved
    header = copy.deepcopy(header)
    paths = [p for p in _paths(header) if p]
    for _ in range(data.draw(st.integers(1, 3))):
        path = data.draw(st.sampled_from(paths))
        try:
            _set(header, path, data.draw(json_values | st.integers(0, 10**12) | st.just(KeyError)))
        except (KeyError, IndexError, TypeError):
            pass  # an earlier change removed or replaced this path's parent
    target = write(tmp_path_factory.mktemp("fz") / "f.safetensors", header, tensors)
    try:
        net, state, _ = load_training(target)
    except CheckpointError:
        return
    assert net.sizes == (3, 4, 2)  # whatever loads is a consistent network with its state


def test_paths_that_are_not_checkpoint_files_are_named(tmp_path):
    with pytest.raises(IsADirectoryError, match="is a directory, not a checkpoint file"):
        sgdlab.load(tmp_path)
    with pytest.raises(FileNotFoundError, match="directory .*nowhere does not exist"):
        sgdlab.save(tmp_path / "nowhere" / "w.safetensors", sgdlab.Network([2, 1], seed=0))
