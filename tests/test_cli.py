import json
import os
import re
import subprocess
import sys

import numpy as np
import pytest

import sgdlab
from sgdlab.cli import main


def sgd(*args, env=None):
    """Run the installed command as a user would."""
    return subprocess.run([sys.executable, "-m", "sgdlab", *args], capture_output=True, text=True, timeout=300,
                          env={**os.environ, **(env or {})})


def test_help_lists_every_option():
    out = sgd("train", "--help")
    assert out.returncode == 0
    for opt in ("--data", "--data-dir", "--method", "--batch-size", "--lr", "--epochs", "--hidden", "--activation",
                "--cost", "--init", "--momentum", "--nesterov", "--weight-decay", "--sampling", "--seed", "--quiet",
                "--out"):
        assert opt in out.stdout
    assert sgd("--help").returncode == 0


def test_default_train_on_digits_reaches_90_percent():
    out = sgd("train", "--quiet")
    assert out.returncode == 0, out.stderr
    acc = float(re.search(r"test accuracy (\d\.\d+)", out.stdout).group(1))
    assert acc >= 0.90
    assert "Traceback" not in out.stderr


def test_full_run_with_out_writes_every_artifact(tmp_path):
    out = sgd("train", "--epochs", "3", "--hidden", "16,8", "--momentum", "0.5", "--out", str(tmp_path / "run"))
    assert out.returncode == 0, out.stderr
    run = tmp_path / "run"
    assert sorted(p.name for p in run.iterdir()) == ["checkpoint.safetensors", "classes.json", "history.csv",
                                                     "history.json", "history.png", "metrics.csv", "metrics.jsonl",
                                                     "network.json", "test.json", "weights.safetensors"]
    lines = (run / "metrics.jsonl").read_text().splitlines()
    assert [json.loads(ln)["epoch"] for ln in lines] == [0, 1, 2, 3]
    assert (run / "history.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    hist = json.loads((run / "history.json").read_text())
    assert [r["epoch"] for r in hist["epochs"]] == [0, 1, 2, 3]
    assert json.loads((run / "network.json").read_text())["sizes"] == [64, 16, 8, 10]
    net = sgdlab.load(run / "weights.safetensors")
    ds = sgdlab.data.load_digits_split(seed=0)
    test = json.loads((run / "test.json").read_text())  # the test split, evaluated once, at the end
    assert (
        net.accuracy(ds.X_test, ds.y_test)
        == pytest.approx(test["accuracy"])
        == pytest.approx(hist["config"]["test"]["accuracy"])
    )
    assert test["n"] == 360 and test["split"] == "test"
    assert "epoch   3" in out.stdout and "validation accuracy" in out.stdout  # one line per epoch off a terminal
    assert "test" not in "".join(ln for ln in out.stdout.splitlines() if ln.startswith("epoch"))


def test_methods_from_the_command_line():
    for args in (
        ["--method", "batch", "--lr", "5", "--epochs", "5"],
        ["--method", "stochastic", "--lr", "0.5", "--epochs", "1"],
    ):
        assert main(["train", "--quiet", *args]) == 0


def test_target_column_scaling_and_synthetic_data(tmp_path, capsys):
    rng = np.random.default_rng(0)
    X = rng.random((90, 2))
    (tmp_path / "c.csv").write_text("label,a,b\n" + "\n".join(f"{int(a > b)},{a * 100},{b * 100}" for a, b in X))
    assert main(["train", "--quiet", "--data", str(tmp_path / "c.csv"), "--target", "label", "--scale", "standard",
                 "--epochs", "20", "--lr", "1"]) == 0
    assert float(re.search(r"test accuracy (\d\.\d+)", capsys.readouterr().out).group(1)) > 0.8
    assert (
        main(["train", "--quiet", "--data", "spirals", "--hidden", "20,20", "--activation", "tanh", "--epochs", "3"])
        == 0
    )
    assert capsys.readouterr().out.startswith("spirals: 2-20-20-2 network")


def test_regression_csv(tmp_path, capsys):
    rng = np.random.default_rng(0)
    X = rng.random((60, 2))
    (tmp_path / "r.csv").write_text("\n".join(f"{a},{b},{a - b + 0.25}" for a, b in X))
    assert main(["train", "--quiet", "--data", str(tmp_path / "r.csv"), "--lr", "0.5", "--epochs", "5"]) == 0
    assert "test cost" in capsys.readouterr().out


def test_mnist_download_from_the_command_line(tmp_path):
    from test_data import _Server, write_mnist_like

    src = tmp_path / "server"
    src.mkdir()
    write_mnist_like(src)
    # the real checksums cannot match these small files: the download must be refused, with no file left
    with _Server(src) as server:
        out = sgd(
            "train", "--data", "mnist", "--data-dir", str(tmp_path / "cache"), env={"SGDLAB_MNIST_MIRRORS": server.url}
        )
    assert out.returncode != 0
    assert "SHA-256 mismatch" in out.stderr and "Traceback" not in out.stderr
    assert not (tmp_path / "cache").exists()  # no file left, and no new empty --data-dir


def test_mnist_from_a_data_dir(tmp_path):
    from test_data import write_mnist_like

    write_mnist_like(tmp_path, n_train=50, n_test=20)
    out = sgd("train", "--data", "mnist", "--data-dir", str(tmp_path), "--epochs", "2", "--quiet")
    assert out.returncode == 0, out.stderr
    assert out.stdout.startswith("mnist: 784-30-10 network")


@pytest.mark.parametrize("args,message", [
    (["--lr", "0"], "learning rate lr must be a finite number > 0"),
    (["--lr", "-3"], "learning rate lr must be a finite number > 0"),
    (["--lr", "nan"], "learning rate lr must be a finite number > 0"),
    (["--batch-size", "5000"], r"batch_size must be \[1, 1293\]; got 5000"),  # 1437 less 144 for validation
    (["--batch-size", "0"], r"batch_size must be \[1, 1293\]; got 0"),
    (["--epochs", "0"], "epochs must be >= 1"),
    (["--method", "batch", "--batch-size", "10"], "batch_size must be 1293 or None"),
    (["--momentum", "1"], r"momentum must be in \[0, 1\)"),
    (["--nesterov"], "nesterov=True needs momentum > 0"),
    (["--cost", "cross_entropy", "--output-activation", "relu"], "needs output activation 'sigmoid' or 'softmax'"),
    (["--data", "nope.csv"], "data file nope.csv does not exist"),
    (["--checkpoint-every", "2"], "--checkpoint-every needs --out"),
    (["--out", "/tmp/sgdlab-x", "--checkpoint-every", "-1"], "--checkpoint-every must be >= 0"),
    (["--resume", "/nonexistent/run"], "checkpoint /nonexistent/run/checkpoint.safetensors does not exist"),
    (["--data", "cifar"], "unknown data 'cifar'; valid: digits, mnist"),
    (["--hidden", "abc"], "--hidden takes comma-separated layer widths"),
    (["--method", "adam"], "invalid choice: 'adam'"),
    (["--lr", "fast"], "invalid float value: 'fast'"),
])
def test_bad_arguments_exit_nonzero_with_one_clear_line(args, message, capsys):
    try:
        code = main(["train", "--quiet", *args])
    except SystemExit as e:  # argparse's own errors
        code = e.code
    err = capsys.readouterr().err
    assert code != 0
    assert re.search(message, err), err
    assert "Traceback" not in err
    assert err.strip().splitlines()[-1].startswith("sgdlab")


def test_errors_from_a_real_process_have_no_traceback():
    out = sgd("train", "--lr", "0")
    assert out.returncode == 1
    assert out.stderr == "sgdlab: error: learning rate lr must be a finite number > 0; got 0.0\n"


def test_bad_data_files_from_the_command_line(tmp_path):
    (tmp_path / "bad.npz").write_bytes(b"not a zip")
    (tmp_path / "nan.csv").write_text("1,2,0\nnan,3,1\n4,5,0\n6,7,1\n8,9,0\n1,1,1\n")
    for name, message in (
        ("bad.npz", "cannot read .*bad.npz as .npz"),
        ("nan.csv", "data row 2, column 1 holds .nan., not a number"),
    ):
        out = sgd("train", "--quiet", "--data", str(tmp_path / name))
        assert out.returncode == 1 and re.search(message, out.stderr), out.stderr
    from test_data import write_mnist_like

    (tmp_path / "images").mkdir()
    write_mnist_like(tmp_path / "images")
    (tmp_path / "images" / "train-images-idx3-ubyte.gz").write_bytes(b"\x00\x00\x08\x03\x00")
    out = sgd("train", "--data", "mnist", "--data-dir", str(tmp_path / "images"))
    assert out.returncode == 1 and "truncated IDX header" in out.stderr, out.stderr


def test_plot_evaluate_and_predict_a_run(tmp_path, capsys):
    for name, method in (("a", "minibatch"), ("b", "batch")):
        assert (
            main(["train", "--quiet", "--epochs", "3", "--method", method, "--lr", "3", "--out", str(tmp_path / name)])
            == 0
        )
    capsys.readouterr()
    assert main(["plot", str(tmp_path / "a"), str(tmp_path / "b"), "--out", str(tmp_path / "runs.png")]) == 0
    assert (tmp_path / "runs.png").read_bytes()[:4] == b"\x89PNG"
    assert main(["evaluate", str(tmp_path / "a"), "--out", str(tmp_path / "eval.json")]) == 0
    out = capsys.readouterr().out
    result = json.loads((tmp_path / "eval.json").read_text())
    hist = json.loads((tmp_path / "a" / "history.json").read_text())
    assert result["accuracy"] == pytest.approx(hist["config"]["test"]["accuracy"])
    cm = np.array(result["confusion_matrix"])
    assert cm.shape == (10, 10) and cm.sum() == 360 and "confusion matrix" in out
    ds = sgdlab.data.load_digits_split(seed=0)
    np.save(tmp_path / "x.npy", ds.X_test[:5])
    assert main(["predict", str(tmp_path / "a"), str(tmp_path / "x.npy")]) == 0
    printed = [int(v) for v in capsys.readouterr().out.split()]
    net = sgdlab.load(tmp_path / "a" / "weights.safetensors")
    assert printed == list(net.predict(ds.X_test[:5]).argmax(1))
    (tmp_path / "x.csv").write_text("\n".join(",".join(map(str, r)) for r in ds.X_test[:5]))
    # ten sigmoid outputs are not probabilities: --proba is refused, with the reason
    assert main(["predict", str(tmp_path / "a"), str(tmp_path / "x.csv"), "--proba"]) == 1
    assert "--proba needs outputs that are probabilities" in capsys.readouterr().err
    assert main(["train", "--quiet", "--epochs", "2", "--output-activation", "softmax", "--cost", "cross_entropy",
                 "--out", str(tmp_path / "s")]) == 0
    assert (
        main(["predict", str(tmp_path / "s"), str(tmp_path / "x.csv"), "--proba", "--out", str(tmp_path / "p.npy")])
        == 0
    )
    net = sgdlab.load(tmp_path / "s" / "weights.safetensors")
    np.testing.assert_allclose(np.load(tmp_path / "p.npy"), net.predict(ds.X_test[:5]), rtol=1e-6)


def test_plot_a_run_in_progress_and_bad_run_directories(tmp_path, capsys):
    run = tmp_path / "live"
    run.mkdir()
    (run / "metrics.jsonl").write_text(
        '{"epoch": 0, "updates": 0, "examples_seen": 0, "train_seconds": 0.0, "train_cost": 1.0}\n'
        '{"epoch": 1, "updates": 10, "examples_seen": 100, "train_seconds": 0.1, "train_cost": 0.5}\n'
    )
    assert main(["plot", str(run), "--out", str(tmp_path / "live.png")]) == 0
    for argv, message in ((["plot", str(tmp_path)], "not a run directory"),
                          (["evaluate", str(tmp_path)], "no weights.safetensors"),
                          (["predict", str(run), "nope.npy"], "no weights.safetensors")):
        assert main(argv) == 1
        assert message in capsys.readouterr().err


def test_predict_refuses_bad_input(tmp_path, capsys):
    assert main(["train", "--quiet", "--epochs", "1", "--out", str(tmp_path / "r")]) == 0
    np.save(tmp_path / "wrong.npy", np.zeros((3, 5)))
    assert main(["predict", str(tmp_path / "r"), str(tmp_path / "wrong.npy")]) == 1
    assert "X has 5 features but the network's input layer has 64" in capsys.readouterr().err
    (tmp_path / "t.txt").write_text("1")
    assert main(["predict", str(tmp_path / "r"), str(tmp_path / "t.txt")]) == 1
    assert "use .npy or .csv" in capsys.readouterr().err


# ----------------------------------------------------------------- what each printed and plotted cost is
def test_epoch_lines_name_the_mean_batch_cost_and_print_the_exact_train_cost_where_evaluated(tmp_path, capsys):
    import csv

    assert main(["train", "--epochs", "3", "--hidden", "10", "--out", str(tmp_path / "a")]) == 0
    out = capsys.readouterr().out
    assert "mean batch cost: C over each batch before its update, averaged over the epoch; train cost: C over " \
           "the whole training set after the epoch (exact)" in out
    lines = [ln for ln in out.splitlines() if ln.startswith("epoch")]
    assert ["mean batch cost" in ln for ln in lines] == [False, True, True, True]
    assert ["train cost" in ln for ln in lines] == [True, False, False, True]  # the default: the ends only
    assert all("validation cost" in ln for ln in lines)  # the validation set still every epoch
    hist = json.loads((tmp_path / "a" / "history.json").read_text())
    assert hist["config"]["eval_train"] == "ends" and "mean_batch_cost" in hist["fields"]["epochs"]
    printed = [float(re.search(r"mean batch cost (\S+)", ln).group(1)) for ln in lines[1:]]
    assert printed == pytest.approx([r["mean_batch_cost"] for r in hist["epochs"][1:]], abs=6e-6)
    rows = list(csv.DictReader(open(tmp_path / "a" / "metrics.csv")))
    assert rows[0]["mean_batch_cost"] == "" and rows[1]["train_cost"] == ""
    assert float(rows[2]["mean_batch_cost"]) == pytest.approx(hist["epochs"][2]["mean_batch_cost"])

    assert main(["train", "--epochs", "3", "--hidden", "10", "--eval-train", "every"]) == 0
    lines = [ln for ln in capsys.readouterr().out.splitlines() if ln.startswith("epoch")]
    assert ["train cost" in ln for ln in lines] == [True] * 4
    assert main(["train", "--epochs", "3", "--hidden", "10", "--eval-train", "never", "--out", str(tmp_path / "n")]) \
        == 0
    lines = [ln for ln in capsys.readouterr().out.splitlines() if ln.startswith("epoch")]
    assert not any("train cost" in ln for ln in lines)
    assert json.loads((tmp_path / "n" / "history.json").read_text())["config"]["eval_train"] == "never"


def test_monitor_mean_batch_cost_and_the_exact_train_cost(tmp_path, capsys):
    from sgdlab.callbacks import EarlyStopping

    args = ["train", "--quiet", "--hidden", "10", "--epochs", "30"]
    # nothing improves by 10: the first record with a mean batch cost (epoch 1) is the best, epoch 2 stops it
    assert main([*args, "--monitor", "mean_batch_cost", "--patience", "1", "--min-delta", "10",
                 "--out", str(tmp_path / "m")]) == 0
    assert "2 of 30 epochs (stopped early)" in capsys.readouterr().out
    hist = json.loads((tmp_path / "m" / "history.json").read_text())
    assert [r["epoch"] for r in hist["epochs"]] == [0, 1, 2] and "train_cost" not in hist["epochs"][-1]
    # watching the exact train cost implies evaluating it every epoch (epoch 0 is the best: stops after epoch 1)
    assert main([*args, "--monitor", "train_cost", "--patience", "1", "--min-delta", "10",
                 "--out", str(tmp_path / "t")]) == 0
    hist = json.loads((tmp_path / "t" / "history.json").read_text())
    assert [r["epoch"] for r in hist["epochs"] if "train_cost" in r] == [0, 1]
    assert hist["config"]["eval_train"] == "every"
    capsys.readouterr()
    assert main([*args, "--monitor", "train_cost", "--patience", "2", "--eval-train", "ends"]) == 1
    assert "--monitor train_cost needs the training set evaluated after every epoch: --eval-train every, not ends" \
        in capsys.readouterr().err
    X, y = sgdlab.data.load_digits_split(seed=0)[:2]
    with pytest.raises(ValueError, match=r"cannot monitor 'train_cost': epoch 1's record does not have it \(it "
                                         r"needs fit\(eval_train=True\)"):
        sgdlab.fit(sgdlab.Network([64, 10, 10], seed=0), X, y, epochs=3, callbacks=[EarlyStopping("train_cost")])


def test_history_plot_draws_each_cost_as_its_own_line(tmp_path, monkeypatch):
    """The exact training cost (two evaluations by default: markers only, never a line through epochs it did
    not see), the mean batch cost (dotted, from epoch 1) and the validation cost (dashed) are three series."""
    from sgdlab import plots

    figures = []
    monkeypatch.setattr(plots, "save_figure", lambda fig, path, title=None, dpi=90: figures.append(fig) or path)
    X, y = sgdlab.data.load_digits_split(seed=0)[:2]
    h = sgdlab.fit(sgdlab.Network([64, 10, 10], seed=0), X, y, epochs=4, seed=0, validation_split=0.1)
    plots.plot_history(h, tmp_path / "h.png")
    lines = {ln.get_label(): ln for ln in figures[-1].axes[0].get_lines()}
    assert set(lines) == {"training cost after the epoch (exact)", "mean batch cost during the epoch",
                          "validation cost after the epoch"}
    train, mean, val = (lines[k] for k in ("training cost after the epoch (exact)", "mean batch cost during the epoch",
                                           "validation cost after the epoch"))
    assert list(train.get_xdata()) == [0, 4] and train.get_linestyle() == "None"
    assert list(mean.get_xdata()) == [1, 2, 3, 4] and mean.get_linestyle() == ":"
    assert list(mean.get_ydata()) == h["mean_batch_cost"][1:]
    assert list(val.get_xdata()) == [0, 1, 2, 3, 4] and val.get_linestyle() == "--"
    plots.plot_runs({"a": h.epochs}, tmp_path / "r.png")
    labels = {ln.get_label(): ln.get_linestyle() for ln in figures[-1].axes[0].get_lines()}
    assert labels == {"a (training)": "None", "a (mean batch cost)": ":", "a (validation)": "--"}
