"""Interrupt a real `sgdlab train` process, resume it, and get the uninterrupted run's weights bit for bit."""

import os
import signal
import subprocess
import sys
import time

import numpy as np
import pytest

import sgdlab

# long enough (a few seconds with the compiled stepper) that a signal or a kill lands while it trains
EPOCHS = 400
ARGS = ["train", "--method", "stochastic", "--lr", "0.3", "--epochs", str(EPOCHS), "--seed", "3", "--quiet",
        "--hidden", "20"]


def start(*extra):
    return subprocess.Popen([sys.executable, "-m", "sgdlab", *ARGS, *extra], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)


def wait_for(predicate, proc, timeout=120.0):
    t0 = time.time()
    while not predicate():
        assert proc.poll() is None, f"training ended before the test could interrupt it: {proc.communicate()}"
        assert time.time() - t0 < timeout
        time.sleep(0.01)


def epochs_logged(run):
    p = run / "metrics.jsonl"
    return len(p.read_text().splitlines()) if p.exists() else 0


@pytest.fixture(scope="module")
def uninterrupted(tmp_path_factory):
    run = tmp_path_factory.mktemp("ref")
    out = subprocess.run([sys.executable, "-m", "sgdlab", *ARGS, "--out", str(run)], capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    return sgdlab.load(run / "weights.safetensors")


def assert_same_weights(a, b):
    assert all(
        np.array_equal(W1, W2) and np.array_equal(b1, b2) for (W1, b1), (W2, b2) in zip(a.params, b.params, strict=True)
    )


def resume(run):
    out = subprocess.run(
        [sys.executable, "-m", "sgdlab", "train", "--resume", str(run), "--quiet"], capture_output=True, text=True
    )
    assert out.returncode == 0, out.stderr
    return sgdlab.load(run / "weights.safetensors")


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM])
def test_signal_finishes_the_update_saves_and_resumes_bit_identically(tmp_path, uninterrupted, sig):
    run = tmp_path / "run"
    proc = start("--out", str(run))
    wait_for(lambda: epochs_logged(run) >= 3, proc)
    proc.send_signal(sig)
    stdout, stderr = proc.communicate(timeout=60)
    assert proc.returncode == 128 + sig, stderr
    assert f"stopped by {signal.Signals(sig).name}" in stderr and "sgdlab train --resume" in stderr
    assert "Traceback" not in stderr
    from sgdlab.checkpoint import load_training

    _, state, _ = load_training(run / "checkpoint.safetensors")
    assert 0 < state.step < EPOCHS * 1438  # stopped mid-run (mid-epoch, most likely)
    assert_same_weights(resume(run), uninterrupted)


def test_sigkill_at_a_random_moment_then_resume_from_last_checkpoint(tmp_path, uninterrupted):
    run = tmp_path / "run"
    proc = start("--out", str(run), "--checkpoint-every", "1")
    wait_for(lambda: (run / "checkpoint.safetensors").exists(), proc)
    time.sleep(np.random.default_rng(int.from_bytes(os.urandom(4), "little")).uniform(0.0, 0.5))
    assert proc.poll() is None
    proc.kill()  # SIGKILL: no handler, no clean-up
    proc.communicate(timeout=60)
    assert proc.returncode == -signal.SIGKILL
    leftovers = [p.name for p in run.iterdir() if p.name.startswith(".")]
    assert all(
        name.endswith(".tmp") for name in leftovers
    )  # at most an unfinished temp file, never a broken checkpoint
    assert_same_weights(resume(run), uninterrupted)


def test_resume_can_extend_and_refuses_other_data(tmp_path):
    run = tmp_path / "run"
    base = [sys.executable, "-m", "sgdlab", "train", "--epochs", "2", "--quiet", "--out", str(run)]
    assert subprocess.run(base, capture_output=True).returncode == 0
    out = subprocess.run(
        [sys.executable, "-m", "sgdlab", "train", "--resume", str(run), "--quiet"], capture_output=True, text=True
    )
    assert out.returncode == 1 and "already has 2 epochs" in out.stderr
    out = subprocess.run([sys.executable, "-m", "sgdlab", "train", "--resume", str(run), "--epochs", "4", "--quiet"],
                         capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    from sgdlab.checkpoint import load_training

    _, state, meta = load_training(run / "checkpoint.safetensors")
    assert state.epoch == 4 and meta["train_args"]["checkpoint_every"] == 0
    ref = tmp_path / "ref"
    assert subprocess.run([*base[:5], "4", "--quiet", "--out", str(ref)], capture_output=True).returncode == 0
    assert_same_weights(sgdlab.load(run / "weights.safetensors"), sgdlab.load(ref / "weights.safetensors"))
