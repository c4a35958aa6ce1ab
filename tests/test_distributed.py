"""Training on several MPI ranks: launched with ``mpiexec -n 2`` and ``-n 3`` from here.

Skipped cleanly where mpi4py or mpiexec is missing (``pip install ".[mpi]"``). Bit-identity is
compared through SHA-256 digests of the parameters; the fast reduction against its stated bound.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from conftest import MNIST_TEST as _MNIST_TEST

MNIST_TEST = tuple(
    p if p.exists() else Path(os.environ.get("SGDLAB_DATA", "/nonexistent")) / "mnist" / p.name for p in _MNIST_TEST
)

HERE = Path(__file__).resolve().parent
SRC = HERE.parent / "src"
FAST_BOUND = 1e-5  # README: max |w_P - w_1| after one epoch of MNIST, fast (allreduce) reduction, float32


def _mpiexec():
    pytest.importorskip("mpi4py")
    exe = shutil.which("mpiexec") or (shutil.which("mpiexec", path=os.path.dirname(sys.executable)))
    if exe is None:
        pytest.skip('mpiexec not found (pip install ".[mpi]" provides MPICH\'s)')
    return exe


def _env():
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join([str(SRC), str(HERE), env.get("PYTHONPATH", "")])
    env["OMP_NUM_THREADS"] = env["OPENBLAS_NUM_THREADS"] = "1"
    return env


def worker(ranks: int | None, scenario: str, tmp_path) -> dict:
    """Run tests/mpi_worker.py on ``ranks`` ranks (None: one plain process) and return rank 0's JSON."""
    out = tmp_path / f"{scenario.split(':')[0]}-{ranks}.json"
    cmd = [sys.executable, str(HERE / "mpi_worker.py"), scenario, str(out)]
    if ranks is not None:
        cmd = [_mpiexec(), "-n", str(ranks), *cmd]
    p = subprocess.run(cmd, env=_env(), capture_output=True, text=True, timeout=120, check=False)
    assert p.returncode == 0, p.stderr[-3000:]
    return json.loads(out.read_text())


@pytest.fixture(scope="module")
def one_process(tmp_path_factory):
    return worker(None, "one-process", tmp_path_factory.mktemp("one"))


@pytest.mark.parametrize("ranks", [2, 3])
def test_exact_reduction_is_bit_identical_to_one_process(ranks, one_process, tmp_path):
    got = worker(ranks, "exact", tmp_path)
    for method in ("minibatch", "batch", "stochastic"):
        digests = got[f"exact-{method}"]
        assert len(digests) == ranks and len(set(digests)) == 1, f"{method}: ranks hold different parameters"
        if method != "stochastic":  # local SGD with P > 1 is another algorithm; P = 1 is checked below
            assert digests[0] == one_process[f"exact-{method}"][0], method
    # batch GD reading its rows from a file on disk ends exactly where the in-memory run does
    assert got["exact-batch-on-disk"] == [one_process["exact-batch"][0]] * ranks
    # each epoch's mean batch cost is the global batches', the same on every rank and bit for bit the one
    # process's; local SGD's batch costs are each rank's own example's: it records none
    for method in ("minibatch", "batch"):
        costs = got[f"mean-batch-cost-exact-{method}"]
        assert costs == [one_process[f"mean-batch-cost-exact-{method}"][0]] * ranks, method
        assert costs[0][0] is None and all(c is not None and c > 0 for c in costs[0][1:])
    assert got["mean-batch-cost-exact-stochastic"] == [[None] * 4] * ranks
    # the last round of local SGD: the ranks with an example record its cost, the one without none
    last = got["local-sgd-last-batch-cost"]
    assert [c is None for c in last] == [r >= 203 % ranks for r in range(ranks)], last
    assert all(c > 0 for c in last if c is not None)


def test_one_rank_is_the_plain_algorithm(one_process):
    # local SGD on one rank is plain SGD; the allreduce stepper on one rank is the reference path
    assert one_process["exact-stochastic"] == one_process["plain-stochastic"]
    for method in ("minibatch", "batch", "stochastic"):
        assert one_process[f"allreduce-{method}"] == one_process[f"plain-{method}"], method
    # the micro-shard sum of exact mode is a different (fixed) order of additions
    assert one_process["exact-minibatch"] != one_process["plain-minibatch"]
    # on one rank local SGD is plain SGD: its batch costs are the batches' and make the mean batch cost
    for method in ("minibatch", "batch", "stochastic"):
        got = one_process[f"mean-batch-cost-exact-{method}"][0]
        plain = one_process[f"mean-batch-cost-plain-{method}"][0]
        assert got[0] is None and plain[0] is None and None not in got[1:]
        np.testing.assert_allclose(got[1:], plain[1:], rtol=1e-6)


def test_allreduce_agrees_with_one_process_and_ranks_agree(tmp_path, one_process):
    got = worker(2, "allreduce", tmp_path)
    import sgdlab

    from mpi_worker import HISTORIES, train

    for method in ("minibatch", "batch"):
        assert len(set(got[f"allreduce-{method}"])) == 1
        ref = train(None, method, None)
        flat = np.concatenate([np.ravel(a) for p in ref.numpy_params() for a in p])
        diff = np.max(np.abs(np.asarray(got[f"params-{method}"][0], np.float32) - flat))
        assert diff < FAST_BOUND, (method, diff)
        costs = got[f"mean-batch-cost-{method}"]
        assert len(costs) == 2 and costs[0] == costs[1]  # the global batch cost: equal on every rank
        np.testing.assert_allclose(costs[0][1:], HISTORIES[method, None]["mean_batch_cost"][1:], rtol=1e-5)
    assert sgdlab  # imported for the worker's path


def test_allreduce_within_the_stated_bound_on_mnist(tmp_path):
    if not all(p.exists() for p in MNIST_TEST):
        pytest.skip("MNIST test set not found")
    got = worker(2, f"mnist:{MNIST_TEST[0].parent}", tmp_path)
    diff = np.max(np.abs(np.asarray(got["allreduce"][0]) - np.asarray(got["None"][0])))
    assert 0 < diff < FAST_BOUND  # not identical (another summation order), but within float rounding


def test_refusals_before_training(tmp_path):
    got = worker(3, "refusals", tmp_path)
    expected = {
        "other-data": "the ranks differ in training data",
        "other-settings": "the ranks differ in training settings",
        "other-version": "the ranks differ in sgdlab version",
        "small-batch": "a mini-batch of m=2 rows cannot be split over 3 ranks",
    }
    for case, message in expected.items():
        assert got[case] is not None and message in got[case], (case, got[case])


def test_missing_mpi4py_is_refused_with_the_install_hint(monkeypatch):
    from sgdlab import distributed

    monkeypatch.setitem(sys.modules, "mpi4py", None)
    monkeypatch.setenv("PMI_SIZE", "2")
    with pytest.raises(distributed.DistributedError, match=r'pip install "\.\[mpi\]"'):
        distributed.command_world(None, None)
    monkeypatch.delenv("PMI_SIZE")
    for name in distributed._SIZE_VARIABLES:
        monkeypatch.delenv(name, raising=False)
    assert distributed.command_world(None, None) is None  # one process: as without MPI


# ----------------------------------------------------------------- the command line: stop, kill, resume
TRAIN = ["-m", "sgdlab", "train", "--data", "digits", "--batch-size", "16", "--reduction", "exact", "--quiet"]


def cli(ranks, *args, timeout=120):
    cmd = [sys.executable, *TRAIN, *args]
    if ranks is not None:
        cmd = [_mpiexec(), "-n", str(ranks), *cmd]
    return subprocess.run(cmd, env=_env(), capture_output=True, text=True, timeout=timeout, check=False)


def launch(ranks, *args):
    cmd = [_mpiexec(), "-n", str(ranks), sys.executable, *TRAIN, *args]
    return subprocess.Popen(cmd, env=_env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def rank_pids(proc):
    """The rank processes of an mpiexec job (children of its hydra proxy), in start order."""
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        out = subprocess.run(["ps", "-eo", "pid,ppid,args"], capture_output=True, text=True, check=False).stdout
        rows = [ln.split(None, 2) for ln in out.splitlines()[1:]]
        proxies = {r[0] for r in rows if r[1] == str(proc.pid)}
        ranks = sorted(int(r[0]) for r in rows if r[1] in proxies and "sgdlab" in r[2])
        if ranks:
            return ranks
        time.sleep(0.1)
    raise AssertionError("no rank processes found")


def wait_for(path: Path, proc, timeout=90):
    deadline = time.monotonic() + timeout
    while not path.exists():
        assert proc.poll() is None, proc.communicate()[1][-2000:]
        assert time.monotonic() < deadline, f"{path} never appeared"
        time.sleep(0.05)


def weights(run: Path) -> bytes:
    from sgdlab import checkpoint

    return b"".join(a.tobytes() for W, b in checkpoint.read(run / "weights.safetensors")[1] for a in (W, b))


EPOCHS = "30"  # long enough (a few seconds) that a signal sent after epoch 0 arrives while the ranks train


@pytest.fixture(scope="module")
def uninterrupted(tmp_path_factory):
    """EPOCHS epochs in one process (exact reduction): what every interrupted run must end as."""
    run = tmp_path_factory.mktemp("whole") / "run"
    p = cli(None, "--epochs", EPOCHS, "--out", str(run))
    assert p.returncode == 0, p.stderr
    return weights(run)


def test_sigterm_stops_every_rank_and_resumes_on_other_rank_counts(tmp_path, uninterrupted):
    run = tmp_path / "run"
    job = launch(2, "--epochs", EPOCHS, "--out", str(run))
    wait_for(run / "metrics.jsonl", job)  # epoch 0 recorded: the ranks are training
    time.sleep(0.3)
    os.kill(rank_pids(job)[-1], signal.SIGTERM)  # one rank only: the others learn it through the reduction
    _, err = job.communicate(timeout=60)
    assert job.returncode == 128 + signal.SIGTERM, err
    assert err.count("stopped by") == 1 and "continue with: sgdlab train --resume" in err  # rank 0 alone speaks
    p = cli(3, "--resume", str(run), "--epochs", EPOCHS)
    assert p.returncode == 0, p.stderr
    assert weights(run) == uninterrupted


def test_sigkill_of_one_rank_ends_the_job_and_the_checkpoint_resumes_exactly(tmp_path, uninterrupted):
    run = tmp_path / "run"
    job = launch(2, "--epochs", "300", "--checkpoint-every", "1", "--out", str(run))
    wait_for(run / "checkpoint.safetensors", job)
    t0 = time.monotonic()
    os.kill(rank_pids(job)[-1], signal.SIGKILL)
    out, err = job.communicate(timeout=60)  # no hang: the launcher ends every rank
    assert job.returncode != 0 and time.monotonic() - t0 < 30
    report = (out + err).lower()
    # MPICH reports the lost rank one of two ways, whichever comes first: the launcher sees rank 1
    # die ("BAD TERMINATION ... signal 9"), or rank 0's next collective fails against the dead peer
    # and MPICH aborts the job with a fatal error (seen in CI: process_vm_readv failed, errno 3)
    lost = ("signal 9", "bad termination", "fatal error in")
    assert any(s in report for s in lost), out + err
    p = cli(2, "--resume", str(run), "--epochs", EPOCHS)
    if "already has" in p.stderr:  # the job got past the epochs before the kill: nothing to resume to
        pytest.skip(f"the killed job had already trained {EPOCHS} epochs")
    assert p.returncode == 0, p.stderr
    assert weights(run) == uninterrupted


def test_cli_refusal_is_one_line_and_ends_every_rank(tmp_path):
    p = cli(3, "--batch-size", "2", "--epochs", "1", timeout=60)
    assert p.returncode == 1
    lines = [ln for ln in p.stderr.splitlines() if ln.startswith("sgdlab: error:")]
    assert len(lines) == 1 and "cannot be split over 3 ranks" in lines[0], p.stderr
