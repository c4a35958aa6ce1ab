"""The first hour of a new user (issue 9): a light import, validation and early stopping, honest
defaults and warnings, tables with words for labels, the learning-rate finder, progress within an epoch."""

import importlib
import io
import json
import os
import re
import subprocess
import sys

import numpy as np
import pytest

import sgdlab
from sgdlab.callbacks import EarlyStopping, ProgressBar, ReduceLROnPlateau
from sgdlab.cli import LAB_EXPERIMENTS, main
from sgdlab.data.dataset import split_validation

# what `import sgdlab` and `sgdlab --help` must not load (SciPy included: the fused step's BLAS and
# the sigmoid's expit are imported on first use)
HEAVY = ("sklearn", "scipy", "matplotlib", "pandas", "tqdm", "pooch", "requests", "torch", "numba", "jax", "mpi4py",
         "cupy",
         "sgdlab.lab", "sgdlab.estimators", "sgdlab.plots", "sgdlab.lrfinder", "sgdlab.data.digits",
         "sgdlab.data.synthetic", "sgdlab.data.scaling")


def _loaded_after(code: str) -> set:
    out = subprocess.run([sys.executable, "-c", code + "; import sys, json; print(json.dumps(sorted(sys.modules)))"],
                         check=False, capture_output=True, text=True, timeout=120, env={**os.environ})
    assert out.returncode == 0, out.stderr
    return set(json.loads(out.stdout.splitlines()[-1]))


@pytest.mark.parametrize("code", ["import sgdlab", "from sgdlab.cli import build_parser; build_parser()"])
def test_import_and_help_load_no_heavy_module(code):
    loaded = _loaded_after(code)
    heavy = sorted(m for m in loaded if any(m == h or m.startswith(h + ".") for h in HEAVY))
    assert heavy == [], f"{code!r} loads {heavy[:10]}"


def test_lazy_names_still_work():
    assert sgdlab.lr_find is sgdlab.lr_find  # imported on first use, then cached
    importlib.import_module("sgdlab.lrfinder")  # importing the module (as the CLI and doctest runners do)
    assert callable(sgdlab.lr_find) and sgdlab.lr_find is sgdlab.lrfinder.lr_find  # leaves the function be
    assert sgdlab.data.blobs(n=30, seed=0).X_train.shape == (24, 2)
    assert "EarlyStopping" in dir(sgdlab) and "open_npy" in dir(sgdlab.data)
    with pytest.raises(AttributeError, match="has no attribute 'nope'"):
        sgdlab.nope  # noqa: B018


def test_lab_names_in_the_cli_match_the_lab():
    from sgdlab.lab import EXPERIMENTS

    assert set(LAB_EXPERIMENTS) == set(EXPERIMENTS)


def _sgd(*args):
    return subprocess.run(
        [sys.executable, "-m", "sgdlab", *args], check=False, capture_output=True, text=True, timeout=300
    )


def test_version_and_argument_errors_are_one_line_exit_1():
    out = _sgd("--version")
    assert out.returncode == 0 and out.stdout.strip() == f"sgdlab {sgdlab.__version__}"
    for args, message in ((["train", "--method", "adam"], "argument --method: invalid choice: 'adam'"),
                          (["train", "--lr", "fast"], "argument --lr: invalid float value: 'fast'"),
                          (["nope"], "invalid choice: 'nope'"), ([], "the following arguments are required: COMMAND")):
        out = _sgd(*args)
        assert out.returncode == 1, (args, out.returncode)
        assert len(out.stderr.splitlines()) == 1 and out.stderr.startswith("sgdlab: error: ") and message in out.stderr


def test_fit_validation_split_is_stratified_and_exclusive():
    X, y = sgdlab.data.load_digits_split(seed=0)[:2]
    Xt, yt, (Xv, yv) = split_validation(X, y, 0.1, seed=0)
    assert len(yv) == 144 and len(yt) == len(y) - 144
    np.testing.assert_allclose(np.bincount(yv) / len(yv), np.bincount(y) / len(y), atol=1 / 144)  # stratified
    rows = {r.tobytes() for r in X}
    assert {r.tobytes() for r in Xv} | {r.tobytes() for r in Xt} == rows and not {r.tobytes() for r in Xv} & {
        r.tobytes() for r in Xt}
    net = sgdlab.Network([64, 10, 10], seed=0)
    h = sgdlab.fit(net, X, y, epochs=1, validation_split=0.1, seed=0)
    assert h.config["n"] == len(yt) and h.last["val_cost"] == pytest.approx(net.cost(Xv, yv))
    with pytest.raises(ValueError, match="not both"):
        sgdlab.fit(net, X, y, epochs=1, validation=(Xv, yv), validation_split=0.1)
    with pytest.raises(ValueError, match=r"validation_split must be in \(0, 1\)"):
        sgdlab.fit(net, X, y, epochs=1, validation_split=1.5)


def test_early_stopping_callback_needs_what_it_monitors():
    X, y = sgdlab.data.load_digits_split(seed=0)[:2]
    with pytest.raises(ValueError, match="cannot monitor 'val_cost'"):
        sgdlab.fit(sgdlab.Network([64, 10, 10], seed=0), X, y, epochs=2, callbacks=[EarlyStopping()])
    with pytest.raises(ValueError, match="restore_best=True needs the network"):
        EarlyStopping(restore_best=True)
    with pytest.raises(ValueError, match="unknown monitor 'loss'; valid: val_cost"):
        EarlyStopping(monitor="loss")
    with pytest.raises(ValueError, match="factor must be in"):
        ReduceLROnPlateau(lr=1.0, factor=2)


def test_progress_bar_moves_within_the_first_epoch():
    X, y = sgdlab.data.load_digits_split(seed=0)[:2]
    seen = []

    class Watch(ProgressBar):
        def on_update_end(self, r):
            super().on_update_end(r)
            if self.bar is not None:
                seen.append((r["epoch"], self.bar.n, self.bar.postfix))

    stream = io.StringIO()
    per_epoch = -(-len(X) // 10)
    bar = Watch(2, per_epoch, file=stream, update_interval=10)
    sgdlab.fit(sgdlab.Network([64, 10, 10], seed=0), X, y, epochs=2, seed=0, callbacks=[bar])
    bar.close()
    first = [(n, post) for e, n, post in seen if e == 1]
    assert first[0][0] == 10 and len(first) >= per_epoch // 10  # from the 10th update, every 10 updates
    assert [n for n, _ in first] == sorted(n for n, _ in first) and first[-1][0] <= per_epoch
    assert "ex/s=" in first[-1][1] and "mean batch cost=" in first[-1][1]
    # the running mean over every update so far, not over the 14 the bar was shown (updates 10, 20, ..., 140)
    n, shown = first[-1]
    ups = sgdlab.fit(sgdlab.Network([64, 10, 10], seed=0), X, y, epochs=1, seed=0, record_updates=True).updates[:n]
    mean = sum(u["batch_cost"] * u["batch_size"] for u in ups) / sum(u["batch_size"] for u in ups)
    assert n == 140 and f"mean batch cost={mean:.4f}" in shown
    assert "epoch 1/2" in stream.getvalue() and "epoch 2/2" in stream.getvalue()


def test_train_reports_validation_each_epoch_and_test_once(tmp_path, capsys):
    assert main(["train", "--epochs", "2", "--hidden", "10", "--out", str(tmp_path / "r")]) == 0
    out = capsys.readouterr().out
    epoch_lines = [ln for ln in out.splitlines() if ln.startswith("epoch")]
    assert len(epoch_lines) == 3 and all("validation cost" in ln and "test" not in ln for ln in epoch_lines)
    assert len(re.findall(r"test accuracy", out)) == 1
    hist = json.loads((tmp_path / "r" / "history.json").read_text())
    assert hist["config"]["n"] == 1293 and "test" in hist["config"]
    assert json.loads((tmp_path / "r" / "test.json").read_text())["n"] == 360


def test_patience_restore_best_and_reduce_on_plateau_from_the_command_line(tmp_path, capsys):
    args = ["train", "--quiet", "--hidden", "10", "--lr", "30", "--epochs", "40"]
    assert main([*args, "--patience", "3", "--restore-best", "--out", str(tmp_path / "es")]) == 0
    out = capsys.readouterr().out
    hist = json.loads((tmp_path / "es" / "history.json").read_text())
    ran = hist["epochs"][-1]["epoch"]
    assert ran < 40 and f"{ran} of 40 epochs (stopped early)" in out
    val = [r["val_cost"] for r in hist["epochs"]]
    best = int(np.argmin(val))
    assert ran - best == 3 and hist["config"]["restored_best_epoch"] == best and f"weights of epoch {best}" in out
    ds = sgdlab.data.load_digits_split(seed=0)
    _, _, (Xv, yv) = split_validation(ds.X_train, ds.y_train, 0.1, 0)
    net = sgdlab.load(tmp_path / "es" / "weights.safetensors")
    assert net.cost(Xv, yv) == pytest.approx(val[best], rel=1e-6)  # the saved weights are the best epoch's

    assert main([*args[:-1], "4", "--reduce-lr-on-plateau", "--plateau-patience", "1", "--min-delta", "10",
                 "--plateau-factor", "0.5", "--out", str(tmp_path / "pl")]) == 0
    lrs = [r["lr"] for r in json.loads((tmp_path / "pl" / "history.json").read_text())["epochs"][1:]]
    assert lrs == [30.0, 15.0, 7.5, 3.75]  # nothing improves by 10: halved after every epoch
    assert main([*args, "--monitor", "val_cost", "--patience", "2", "--validation-split", "0"]) == 1
    assert "--monitor val_cost needs validation data" in capsys.readouterr().err


@pytest.mark.parametrize("schedule,check", [
    ("step", lambda lr, E: [3.0 * 0.5 ** ((e * E - 1) // E) for e in (1, 2, 3)]),
    ("inverse-time", lambda lr, E: [3.0 / (1 + 0.1 * (e * E - 1) / E) for e in (1, 2, 3)]),
    ("cosine", lambda lr, E: [1.5 * (1 + np.cos(np.pi * (e * E - 1) / (3 * E))) for e in (1, 2, 3)]),
])
def test_lr_schedule_from_the_command_line(tmp_path, schedule, check):
    assert main(["train", "--quiet", "--hidden", "10", "--epochs", "3", "--lr-schedule", schedule, "--lr-every", "1",
                 "--out", str(tmp_path / schedule)]) == 0
    hist = json.loads((tmp_path / schedule / "history.json").read_text())
    E = hist["epochs"][1]["updates"]
    np.testing.assert_allclose([r["lr"] for r in hist["epochs"][1:]], check(3.0, E), rtol=1e-9)


def test_per_method_defaults_and_honest_warnings(capsys):
    assert main(["train", "--quiet", "--method", "batch", "--hidden", "30"]) == 0  # 200 epochs by default
    out = capsys.readouterr().out
    assert "200 epochs" in out and float(re.search(r"test accuracy (\d\.\d+)", out).group(1)) > 0.8
    assert "warning" not in out
    assert main(["train", "--quiet", "--data", "linear"]) == 0  # lr 0.1 for real-valued targets: no divergence
    assert "warning" not in capsys.readouterr().out
    assert main(["train", "--quiet", "--lr", "1000", "--epochs", "3"]) == 0
    out = capsys.readouterr().out
    assert "warning: accuracy" in out and "no better than chance" in out
    assert "predicts one class for every example" in out and "lr=1000 is probably too large" in out
    assert main(["train", "--quiet", "--lr", "0.00001", "--epochs", "2"]) == 0
    out = capsys.readouterr().out
    assert "warning: the cost barely moved" in out and "too few epochs or the step lr=1e-05 too small" in out


def test_csv_with_words_for_labels_quotes_and_a_bom(tmp_path, capsys):
    rng = np.random.default_rng(0)
    names = np.array(["setosa", "versicolor, var.", "virginica"])
    centers = np.array([[0, 0], [4, 0], [0, 4]])
    k = rng.integers(0, 3, 150)
    X = centers[k] + rng.standard_normal((150, 2)) * 0.5
    rows = "\n".join(f'{a:.4f},{b:.4f},"{names[c]}"' for (a, b), c in zip(X, k, strict=True))
    (tmp_path / "iris.csv").write_bytes(b"\xef\xbb\xbf" + f'"x 1",x2,species\n{rows}\n'.encode())
    ds = sgdlab.data.load(str(tmp_path / "iris.csv"))
    assert ds.classes == tuple(sorted(names)) and ds.n_classes == 3 and ds.X_train.shape == (120, 2)
    assert main(["train", "--quiet", "--data", str(tmp_path / "iris.csv"), "--epochs", "20", "--lr", "1",
                 "--out", str(tmp_path / "run")]) == 0
    assert json.loads((tmp_path / "run" / "classes.json").read_text())["classes"] == sorted(names)
    (tmp_path / "one.csv").write_text("0.1,0.0\n")  # a single row is one example
    (tmp_path / "three.csv").write_text("x1,x2\n0,0\n4,0\n0,4\n")
    capsys.readouterr()
    assert main(["predict", str(tmp_path / "run"), str(tmp_path / "one.csv")]) == 0
    assert capsys.readouterr().out == "setosa\n"
    assert main(["predict", str(tmp_path / "run"), str(tmp_path / "three.csv")]) == 0
    assert capsys.readouterr().out.splitlines() == ["setosa", "versicolor, var.", "virginica"]
    np.save(tmp_path / "row.npy", np.array([4.0, 0.0]))
    assert main(["predict", str(tmp_path / "run"), str(tmp_path / "row.npy")]) == 0
    assert capsys.readouterr().out == "versicolor, var.\n"


def test_integer_labels_and_the_task_guess(tmp_path, capsys):
    rng = np.random.default_rng(1)
    X = rng.random((90, 2))
    (tmp_path / "k.csv").write_text("\n".join(f"{a},{b},{1 + int(3 * a)}" for a, b in X))  # labels 1..3
    ds = sgdlab.data.load(str(tmp_path / "k.csv"))
    assert ds.n_classes == 3 and ds.classes == (1, 2, 3) and set(ds.y_train) <= {0, 1, 2}
    assert (
        main(["train", "--quiet", "--data", str(tmp_path / "k.csv"), "--epochs", "2", "--out", str(tmp_path / "k")])
        == 0
    )
    assert json.loads((tmp_path / "k" / "network.json").read_text())["sizes"][-1] == 3
    ages = rng.integers(18, 90, 90)
    (tmp_path / "age.csv").write_text("\n".join(f"{a},{b},{t}" for (a, b), t in zip(X, ages, strict=True)))
    assert sgdlab.data.load(str(tmp_path / "age.csv")).n_classes is None  # 60-odd distinct integers: regression
    assert sgdlab.data.load(str(tmp_path / "age.csv"), task="classification").n_classes == len(set(ages))
    assert sgdlab.data.load(str(tmp_path / "k.csv"), task="regression").n_classes is None
    assert main(["train", "--quiet", "--data", str(tmp_path / "age.csv"), "--task", "regression", "--epochs", "1",
                 "--scale", "standard"]) == 0
    assert "test cost" in capsys.readouterr().out


def test_plot_refuses_a_history_without_epochs(tmp_path, capsys):
    (tmp_path / "h").mkdir()
    (tmp_path / "h" / "history.json").write_text('{"config": {}}')
    assert main(["plot", str(tmp_path / "h")]) == 1
    assert 'not a history written by sgdlab (no list of "epochs"' in capsys.readouterr().err


def test_lr_find_from_python_and_the_command_line(tmp_path, capsys):
    ds = sgdlab.data.load_digits_split(seed=0)
    net = sgdlab.Network([64, 30, 10], seed=0)
    before = net.copy_params()
    r = sgdlab.lr_find(net, ds.X_train, ds.y_train, steps=120, seed=0)
    for (W, b), (W0, b0) in zip(net.params, before, strict=True):  # the sweep leaves the network as it was
        assert np.array_equal(W, W0) and np.array_equal(b, b0)
    assert len(r.lrs) == len(r.costs) == len(r.smoothed) and r.lrs == sorted(r.lrs)
    np.testing.assert_allclose(r.lrs[1] / r.lrs[0], (100 / 1e-4) ** (1 / 119))  # geometric
    i = r.lrs.index(r.suggestion)
    slope = np.gradient(r.smoothed, np.log(r.lrs))
    assert slope[i] == min(slope[10:-1]) and slope[i] < 0  # the steepest descent of the smoothed cost
    assert r.suggestion <= r.largest_stable
    with pytest.raises(ValueError, match="0 < lr_min < lr_max"):
        sgdlab.lr_find(net, ds.X_train, ds.y_train, lr_min=1, lr_max=0.1)
    assert main(["lr-find", "--steps", "80", "--out", str(tmp_path / "lr.png")]) == 0
    out = capsys.readouterr().out
    assert "suggested lr" in out and "largest stable lr" in out
    assert (tmp_path / "lr.png").read_bytes()[:4] == b"\x89PNG"
    saved = json.loads((tmp_path / "lr.json").read_text())
    assert saved["suggestion"] == pytest.approx(float(re.search(r"suggested lr ([\d.e+-]+)", out).group(1)), rel=1e-2)


def test_diagnose_names_the_series_it_reads_under_the_default_evaluation():
    """By default the exact training cost exists before and after training only: "barely moved" compares those
    two; "still falling" and "rose" read the mean batch cost of every epoch, and say so."""
    from sgdlab.diagnose import diagnose
    from sgdlab.train import History

    mean = "the mean batch cost (C over each batch before its update, averaged over the epoch)"
    falling = History(epochs=[{"epoch": 0, "train_cost": 1.0}, {"epoch": 1, "mean_batch_cost": 0.999},
                              {"epoch": 2, "mean_batch_cost": 0.998, "train_cost": 0.997}])
    said = diagnose(falling, lr=1e-5)
    assert said[0] == "the cost barely moved (1 before training, 0.997 after)"
    assert said[1].startswith(f"likely cause: {mean} was still falling at the end: too few epochs or the step")
    rising = History(epochs=[{"epoch": 0, "train_cost": 1.0}, {"epoch": 1, "mean_batch_cost": 1.2},
                             {"epoch": 2, "mean_batch_cost": 1.1, "train_cost": 1.005}])
    assert diagnose(rising, lr=9.0)[1].startswith(f"likely cause: {mean} rose above the training cost before "
                                                  "training: the step lr=9 is too large")
    # two exact evaluations say nothing about the epochs between them: no "fell in every epoch" from them
    ends_only = History(epochs=[{"epoch": 0, "train_cost": 1.0}, {"epoch": 1}, {"epoch": 2, "train_cost": 0.997}])
    assert diagnose(ends_only, lr=1e-5)[1].startswith("likely cause: the cost stopped at a poor value")
    every = History(epochs=[{"epoch": e, "train_cost": 1.0 - e / 1000, **({"mean_batch_cost": 2.0} if e else {})}
                            for e in range(3)])
    assert diagnose(every, lr=1e-5)[1].startswith("likely cause: the training cost was still falling")

