"""One run, one directory: locks, --overwrite, resume after kills at awkward moments, settings never ignored."""

import contextlib
import io
import json
import os
import shutil
import signal
import subprocess
import sys
import time

import numpy as np

import sgdlab
from sgdlab.cli import main

FAST = ["--epochs", "2", "--hidden", "8", "--quiet"]


def sgd(*args, cwd=None):
    """The command line, run in this process (fast); returns what a subprocess run would."""
    out, err, here = io.StringIO(), io.StringIO(), os.getcwd()
    try:
        if cwd is not None:
            os.chdir(cwd)
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
            code = main(list(args))
    finally:
        os.chdir(here)
    return subprocess.CompletedProcess(args, code, out.getvalue(), err.getvalue())


def epochs(run):
    return [json.loads(ln)["epoch"] for ln in (run / "metrics.jsonl").read_text().splitlines()]


def same_weights(a, b):
    return all(
        np.array_equal(W1, W2) and np.array_equal(b1, b2) for (W1, b1), (W2, b2) in zip(a.params, b.params, strict=True)
    )


def test_a_second_process_is_refused_while_a_run_holds_the_directory(tmp_path):
    run = tmp_path / "run"
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)}
    first = subprocess.Popen([sys.executable, "-m", "sgdlab", "train", "--method", "stochastic", "--lr", "0.3",
                              "--epochs", "200", "--quiet", "--out", str(run)],
                             stderr=subprocess.PIPE, text=True, env=env)
    try:
        t0 = time.time()
        while not (run / "metrics.jsonl").exists():
            assert first.poll() is None and time.time() - t0 < 120
            time.sleep(0.05)
        for extra in (["--out", str(run), "--overwrite"], ["--resume", str(run), "--epochs", "300"]):
            second = sgd("train", *FAST[:2], "--quiet", *extra)
            assert second.returncode == 1 and "another sgdlab process is training in" in second.stderr
            assert "Traceback" not in second.stderr
    finally:
        first.send_signal(signal.SIGTERM)
        first.communicate(timeout=60)
    assert epochs(run) == sorted(set(epochs(run)))  # no epoch logged twice


def test_out_into_a_run_is_refused_unless_resume_or_overwrite(tmp_path):
    run = tmp_path / "run"
    assert sgd("train", *FAST, "--out", str(run)).returncode == 0
    before = (run / "checkpoint.safetensors").read_bytes()
    out = sgd("train", *FAST, "--out", str(run))
    assert out.returncode == 1 and "is not empty" in out.stderr and f"--resume {run}" in out.stderr
    assert (run / "checkpoint.safetensors").read_bytes() == before and epochs(run) == [0, 1, 2]
    (run / "notes.txt").write_text("mine")
    out = sgd("train", *FAST[2:], "--epochs", "1", "--seed", "5", "--out", str(run), "--overwrite")
    assert out.returncode == 0, out.stderr
    assert epochs(run) == [0, 1] and (run / "notes.txt").read_text() == "mine"
    assert sgdlab.checkpoint.read(run / "weights.safetensors")[0]["train_args"]["seed"] == 5
    assert sgd("train", "--resume", str(run), "--overwrite").returncode == 1


def test_resume_rewrites_metrics_to_the_checkpoint_and_removes_stale_temporaries(tmp_path):
    run = tmp_path / "run"
    assert sgd("train", *FAST, "--out", str(run)).returncode == 0
    early = (run / "checkpoint.safetensors").read_bytes()
    assert sgd("train", "--resume", str(run), "--epochs", "3", "--quiet").returncode == 0
    # as if killed after logging epoch 3 but before its checkpoint: metrics say 3, the checkpoint 2
    (run / "checkpoint.safetensors").write_bytes(early)
    (run / "weights.safetensors").unlink()
    (run / ".checkpoint.safetensors.abc123.tmp").write_bytes(b"half a file")
    assert epochs(run) == [0, 1, 2, 3]
    out = sgd("train", "--resume", str(run), "--epochs", "3", "--quiet")
    assert out.returncode == 0, out.stderr
    assert epochs(run) == [0, 1, 2, 3]
    assert len((run / "metrics.csv").read_text().splitlines()) == 5
    assert not any(p.name.endswith(".tmp") for p in run.iterdir())


def test_a_kill_between_final_checkpoint_and_weights_is_completed_by_resume(tmp_path):
    run = tmp_path / "run"
    assert sgd("train", *FAST, "--out", str(run)).returncode == 0
    final = sgdlab.load(run / "weights.safetensors")
    for name in ("weights.safetensors", "history.json", "history.csv", "history.png", "network.json"):
        (run / name).unlink()
    ev = sgd("evaluate", str(run))
    assert ev.returncode == 0 and "accuracy" in ev.stdout, ev.stderr  # evaluate reads the checkpoint's weights
    out = sgd("train", "--resume", str(run), "--quiet")
    assert out.returncode == 0, out.stderr
    assert same_weights(sgdlab.load(run / "weights.safetensors"), final) and (run / "history.json").is_file()
    again = sgd("train", "--resume", str(run), "--quiet")
    assert again.returncode == 1 and "already has 2 epochs" in again.stderr


def test_sigterm_during_the_final_writes_ends_with_a_message(tmp_path):
    run = tmp_path / "run"
    code = ("import os, signal, sys, sgdlab.plots as p; from sgdlab.cli import main\n"
            "real = p.plot_history\n"
            "def slow(*a, **k):\n    os.kill(os.getpid(), signal.SIGTERM); return real(*a, **k)\n"
            "p.plot_history = slow\n"
            f"sys.exit(main(['train', '--epochs', '1', '--hidden', '8', '--quiet', '--out', {str(run)!r}]))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120,
                         env={**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)})
    assert out.returncode == 128 + signal.SIGTERM and "Traceback" not in out.stderr
    assert "SIGTERM received while writing the final files; they were completed" in out.stderr
    assert (run / "weights.safetensors").is_file() and (run / "history.png").is_file()


def test_resume_refuses_conflicting_settings_and_python_checkpoints(tmp_path):
    run = tmp_path / "run"
    assert sgd("train", *FAST, "--lr", "2.0", "--out", str(run)).returncode == 0
    out = sgd("train", "--resume", str(run), "--epochs", "3", "--lr", "0.1")
    assert out.returncode == 1 and "--lr 0.1 differs from the run's saved 2.0" in out.stderr
    out = sgd("train", "--resume", str(run), "--epochs", "3", "--out", str(tmp_path / "elsewhere"))
    assert out.returncode == 1 and "differs from --resume" in out.stderr
    out = sgd("train", "--resume", str(run), "--epochs", "3", "--lr", "2.0", "--quiet")
    assert out.returncode == 0, out.stderr
    py = tmp_path / "py"
    py.mkdir()
    X, y = np.eye(4), np.arange(4) % 2
    state = sgdlab.train.TrainState()
    net = sgdlab.Network([4, 2], seed=0)
    sgdlab.fit(net, X, y, epochs=1, batch_size=2, state=state)
    sgdlab.checkpoint.save_training(py / "checkpoint.safetensors", net, state)
    out = sgd("train", "--resume", str(py), "--epochs", "3")
    assert out.returncode == 1 and "was saved from Python" in out.stderr and "Traceback" not in out.stderr


def test_evaluate_works_with_a_corrupt_checkpoint_and_files_follow_the_umask(tmp_path):
    run = tmp_path / "run"
    old = os.umask(0o022)
    try:
        assert sgd("train", *FAST, "--out", str(run)).returncode == 0
    finally:
        os.umask(old)
    assert (run / "checkpoint.safetensors").stat().st_mode & 0o777 == 0o644
    (run / "checkpoint.safetensors").write_bytes(b"garbage")
    out = sgd("evaluate", str(run))
    assert out.returncode == 0 and "accuracy" in out.stdout, out.stderr


def test_data_paths_are_stored_absolute(tmp_path):
    rng = np.random.default_rng(0)
    X = rng.standard_normal((60, 3))
    np.savez(tmp_path / "d.npz", X=X, y=(X[:, 0] > 0).astype(np.int64))
    run = tmp_path / "run"
    assert sgd("train", *FAST, "--data", "d.npz", "--out", str(run), cwd=tmp_path).returncode == 0
    saved = sgdlab.checkpoint.read(run / "checkpoint.safetensors")[0]["train_args"]["data"]
    assert saved == str(tmp_path / "d.npz")
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    assert sgd("evaluate", str(run), cwd=elsewhere).returncode == 0
    assert sgd("train", "--resume", str(run), "--epochs", "3", "--quiet", cwd=elsewhere).returncode == 0
    out = sgd("train", "--resume", str(run), "--epochs", "4", "--data", "d.npz", "--quiet", cwd=tmp_path)
    assert out.returncode == 0, out.stderr  # the same file, named relative to another directory
    shutil.rmtree(elsewhere)


def test_resume_refuses_an_optimizer_state_of_another_structure(tmp_path):
    from safetensors import safe_open
    from safetensors.numpy import save_file

    from sgdlab.checkpoint import _signature

    run = tmp_path / "run"
    assert sgd("train", *FAST, "--momentum", "0.5", "--out", str(run)).returncode == 0
    path = run / "checkpoint.safetensors"
    with safe_open(path, framework="numpy") as f:
        header = json.loads(f.metadata()["sgdlab"])
        tensors = {k: f.get_tensor(k) for k in f.keys() if not k.startswith("opt.")}
    header["opt_state"] = {"tuple": [{"tuple": []}, {"tuple": []}, 7]}  # as if momentum were 0
    text = json.dumps(header)
    save_file(tensors, str(path), metadata={"sgdlab": text, "sgdlab_sha256": _signature(text, tensors)})
    out = sgd("train", "--resume", str(run), "--epochs", "3")
    assert out.returncode == 1 and "does not have the structure of SGD with momentum 0.5" in out.stderr
