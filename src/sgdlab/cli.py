"""The ``sgdlab`` command (also ``python -m sgdlab``)."""

from __future__ import annotations

import argparse
import contextlib
import json
import signal
import sys
from pathlib import Path

import numpy as np

from .activations import HIDDEN_ACTIVATIONS
from .costs import COSTS
from .init import INITIALIZERS
from .sampling import ORDERS
from .train import METHODS, DivergenceError


def _hidden(text: str) -> list[int]:
    if text.strip() in ("", "none"):
        return []
    try:
        sizes = [int(s) for s in text.split(",")]
    except ValueError:
        raise argparse.ArgumentTypeError(f"--hidden takes comma-separated layer widths like 30,30; got {text!r}") from None
    if any(s < 1 for s in sizes):
        raise argparse.ArgumentTypeError(f"hidden layer widths must be >= 1; got {text!r}")
    return sizes


class _Help(argparse.ArgumentDefaultsHelpFormatter):
    """Shows defaults, except the uninformative None and False."""

    def _get_help_string(self, action):
        return action.help if action.default in (None, False) else super()._get_help_string(action)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="sgdlab", description="Train neural networks by batch, stochastic and "
                                     "mini-batch gradient descent, and measure how the variants behave.")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    t = sub.add_parser("train", help="train a network and report test accuracy and cost",
                       description="Train a feedforward network. With no options: 64-30-10 sigmoid network, quadratic "
                       "cost, mini-batch SGD (m=10, eta=3.0, 30 epochs) on scikit-learn's embedded 8x8 digits.",
                       formatter_class=_Help)
    t.add_argument("--data", default="digits",
                   help="digits (embedded), mnist, fashion-mnist, blobs, spirals, linear, or a path to a .npz/.npy/.csv file")
    t.add_argument("--target", default="-1", help="the target column of a .npy/.npz table or .csv: index or header name")
    t.add_argument("--scale", choices=("none", "standard", "minmax"), default="none",
                   help="feature scaling, fitted on the training split only")
    t.add_argument("--data-dir", type=Path, default=None,
                   help="where the MNIST IDX files are (default: $SGDLAB_DATA, else ~/.cache/sgdlab/mnist; downloaded if missing)")
    t.add_argument("--method", choices=METHODS, default="minibatch",
                   help="batch: exact gradient over all n; stochastic: one example per update; minibatch: m examples")
    t.add_argument("--batch-size", type=int, default=None, help="m for minibatch (default 10)")
    t.add_argument("--lr", type=float, default=3.0, help="learning rate eta > 0")
    t.add_argument("--epochs", type=int, default=None, help="passes over the training data (default 30; with --resume, the new total)")
    t.add_argument("--hidden", type=_hidden, default=[30], help="hidden layer widths, e.g. 30,30 ('none' for no hidden layer)")
    t.add_argument("--activation", choices=HIDDEN_ACTIVATIONS, default="sigmoid", help="hidden activation")
    t.add_argument("--output-activation", choices=("sigmoid", "softmax", "tanh", "relu", "identity"), default=None,
                   help="output activation (default: sigmoid; identity for real-valued targets)")
    t.add_argument("--cost", choices=tuple(COSTS), default="quadratic", help="cost function")
    t.add_argument("--init", choices=tuple(INITIALIZERS), default="glorot", help="weight initialiser")
    t.add_argument("--sampling", choices=ORDERS, default="reshuffle", help="how batches are drawn")
    t.add_argument("--momentum", type=float, default=0.0, help="momentum mu in [0, 1)")
    t.add_argument("--nesterov", action="store_true", help="Nesterov momentum (needs --momentum > 0)")
    t.add_argument("--weight-decay", type=float, default=0.0, help="L2 weight decay lambda (weights only)")
    t.add_argument("--dtype", choices=("float32", "float64"), default="float32")
    t.add_argument("--seed", type=int, default=0, help="seed for initial weights and for sampling (separate streams)")
    _add_device_option(t)
    t.add_argument("--quiet", action="store_true", help="print only the final result")
    t.add_argument("--out", type=Path, default=None,
                   help="run directory: checkpoint.safetensors (resumable), weights.safetensors, network.json, "
                   "history.csv/.json/.png, and metrics.csv/.jsonl written while training runs; SIGINT/SIGTERM "
                   "finish the current update, save and exit")
    t.add_argument("--checkpoint-every", type=int, default=None, metavar="N",
                   help="with --out: also save the resumable checkpoint every N epochs (default 0: only at the end or on "
                   "a signal; a resumed run keeps its own N unless given)")
    t.add_argument("--resume", type=Path, default=None, metavar="DIR",
                   help="continue the run in DIR exactly where it stopped, with its saved settings (--epochs may raise the total)")
    t.set_defaults(run=cmd_train)

    pl = sub.add_parser("plot", help="overlay runs: cost and accuracy against epochs, updates, examples, seconds",
                        formatter_class=_Help)
    pl.add_argument("runs", type=Path, nargs="+", metavar="RUN_DIR", help="directories written by `sgdlab train --out`")
    pl.add_argument("--out", type=Path, default=Path("runs.png"), help="the PNG to write")
    pl.set_defaults(run=cmd_plot)
    ev = sub.add_parser("evaluate", help="accuracy, cost and confusion matrix of a trained run on a test set",
                        formatter_class=_Help)
    ev.add_argument("run_dir", type=Path, metavar="RUN_DIR")
    ev.add_argument("--data", default=None, help="data to evaluate on (default: the run's own); its test split is used")
    ev.add_argument("--data-dir", type=Path, default=None)
    ev.add_argument("--target", default=None, help="target column for table files (default: the run's own)")
    ev.add_argument("--out", type=Path, default=None, help="also write the numbers as JSON here")
    ev.set_defaults(run=cmd_evaluate)
    pr = sub.add_parser("predict", help="predict with a trained run: class labels (or values) for each input row",
                        formatter_class=_Help)
    pr.add_argument("run_dir", type=Path, metavar="RUN_DIR")
    pr.add_argument("input", type=Path, help="rows of features: .npy (2-D) or .csv (numbers, optional header)")
    pr.add_argument("--out", type=Path, default=None, help="write predictions here (.npy or .csv) instead of printing")
    pr.add_argument("--proba", action="store_true", help="output activations instead of class labels")
    pr.set_defaults(run=cmd_predict)

    from .lab import EXPERIMENTS

    lab = sub.add_parser("lab", help="run one gradient-descent experiment: a figure, its numbers, a table",
                         description="Measure and show one claim behind batch, stochastic and mini-batch descent. "
                         "Writes OUT/EXPERIMENT.png and OUT/EXPERIMENT.json and prints a table.",
                         formatter_class=_Help)
    lab.add_argument("experiment", choices=tuple(EXPERIMENTS), help="which experiment")
    report = sub.add_parser("report", help="run every lab experiment and write one HTML page",
                            formatter_class=_Help)
    for p in (lab, report):
        p.add_argument("--data", default="digits", help="digits (embedded), mnist, or a path to a .npz/.csv file")
        p.add_argument("--data-dir", type=Path, default=None, help="where the MNIST IDX files are")
        p.add_argument("--seed", type=int, default=0, help="seed of every random choice")
        p.add_argument("--quick", action="store_true", help="smaller, faster settings")
    lab.add_argument("--out", type=Path, default=Path("sgdlab-lab"), help="directory for the figure and the JSON")
    report.add_argument("--out", type=Path, required=True, help="directory for index.html, figures and JSON")
    lab.set_defaults(run=cmd_lab)
    report.set_defaults(run=cmd_report)
    return parser


def _add_device_option(p) -> None:
    p.add_argument("--device", choices=("cpu", "cuda", "auto"), default="cpu",
                   help="cpu: NumPy; cuda: a GPU through PyTorch (else CuPy); auto: a GPU when one is visible, else cpu. "
                   "Not a saved setting: a resumed run goes where --device says")


def _device_backend(device: str):
    """The Backend for --device: NumPy on the CPU; on a GPU PyTorch with CUDA, else CuPy (a clear error if none)."""
    from .backend import gpu_backend, resolve_backend

    return resolve_backend("numpy") if device == "cpu" else gpu_backend(device)


TRAIN_SETTINGS = ("checkpoint_every", "data", "data_dir", "target", "scale", "method", "batch_size", "lr", "epochs", "hidden", "activation", "output_activation",
                  "cost", "init", "sampling", "momentum", "nesterov", "weight_decay", "dtype", "seed")


def _fingerprint(ds) -> str:
    """SHA-256 of the training data, to refuse resuming a run on other data."""
    from .checkpoint import digest

    return digest({"X_train": ds.X_train, "y_train": ds.y_train})


def cmd_train(args) -> int:
    from . import checkpoint, data
    from .callbacks import Checkpointer, EpochPrinter, MetricsLog, ProgressBar, SignalStop
    from .network import Network
    from .plots import plot_history
    from .train import TrainState, fit

    out = args.out
    if args.checkpoint_every is not None and args.checkpoint_every < 0:
        raise ValueError(f"--checkpoint-every must be >= 0; got {args.checkpoint_every}")
    if args.checkpoint_every and out is None and args.resume is None:
        raise ValueError("--checkpoint-every needs --out DIR (where the checkpoint goes)")
    if args.resume is not None:
        out = args.resume
        given = {"epochs": args.epochs, "checkpoint_every": args.checkpoint_every}
        where = _device_backend(args.device)
        net, state, meta = checkpoint.load_training(args.resume / "checkpoint.safetensors", where.name, where.device)
        for k, v in meta["train_args"].items():
            setattr(args, k, Path(v) if k == "data_dir" and v is not None else v)
        for k, v in given.items():
            if v is not None:
                setattr(args, k, v)
    if args.checkpoint_every is None:
        args.checkpoint_every = 0
    if args.epochs is None:
        args.epochs = 30
    ds = data.scale(data.load(args.data, args.data_dir, seed=args.seed, target=args.target), args.scale)
    fingerprint = _fingerprint(ds)
    if args.resume is not None:
        if meta.get("data_sha256") != fingerprint:
            raise ValueError(f"the data of {args.data!r} differs from the data {args.resume} was trained on; cannot resume")
        if state.epoch >= args.epochs:
            raise ValueError(f"{args.resume} already has {state.epoch} epochs; pass --epochs N > {state.epoch} to train on")
    else:
        classes = ds.n_classes
        if classes is None:
            sizes, output = [ds.X_train.shape[1], *args.hidden, 1], args.output_activation or "identity"
        else:
            sizes, output = [ds.X_train.shape[1], *args.hidden, classes], args.output_activation
        where = _device_backend(args.device)
        net = Network(sizes, activation=args.activation, output_activation=output, cost=args.cost, init=args.init,
                      seed=args.seed, dtype=args.dtype, backend=where.name, device=where.device)
        state = TrainState()
    callbacks, bar = [], None
    if not args.quiet:
        if sys.stderr.isatty():
            bar = ProgressBar(args.epochs, initial=state.epoch)
            callbacks.append(bar)
        else:
            callbacks.append(EpochPrinter())
    stopper = SignalStop()
    if out is not None:
        out.mkdir(parents=True, exist_ok=True)
        settings = {k: (str(v) if isinstance(v, Path) else v) for k, v in vars(args).items() if k in TRAIN_SETTINGS}
        ckpt = Checkpointer(out / "checkpoint.safetensors", net, state, args.checkpoint_every,
                            extra={"train_args": settings, "data_sha256": fingerprint, "data": ds.name})
        callbacks += [MetricsLog(out), ckpt, stopper]
    try:
        with stopper if out is not None else contextlib.nullcontext():
            history = fit(net, ds.X_train, ds.y_train, method=args.method, batch_size=args.batch_size, lr=args.lr,
                          epochs=args.epochs, sampling=args.sampling, momentum=args.momentum, nesterov=args.nesterov,
                          weight_decay=args.weight_decay, seed=args.seed, validation=(ds.X_test, ds.y_test),
                          callbacks=callbacks, state=state)
    finally:
        if bar is not None:
            bar.close()
    last = history.last
    sizes = net.sizes
    if out is not None:
        ckpt.save()
        history.to_csv(out / "history.csv")
        history.to_json(out / "history.json")
        checkpoint.save(out / "weights.safetensors", net, extra={"data": ds.name})
        (out / "network.json").write_text(json.dumps(net.describe(), indent=1) + "\n")
        plot_history(history, out / "history.png", title=f"{ds.name}: {args.method}, m={history.config['batch_size']}")
    if stopper.signum is not None:
        name = signal.Signals(stopper.signum).name
        print(f"sgdlab: stopped by {name} after update {state.step} (epoch {state.epoch + (state.position > 0)}); "
              f"saved {out / 'checkpoint.safetensors'}; continue with: sgdlab train --resume {out}", file=sys.stderr)
        return 128 + stopper.signum
    acc = "" if last["val_accuracy"] is None else f"test accuracy {last['val_accuracy']:.4f}, "
    print(f"{ds.name}: {'-'.join(map(str, sizes))} network, {args.method} (m={history.config['batch_size']}), "
          f"{args.epochs} epochs in {last['train_seconds']:.2f} s: {acc}test cost {last['val_cost']:.5f}")
    if out is not None and not args.quiet:
        print(f"wrote {out}/: checkpoint.safetensors, weights.safetensors, network.json, history.csv/.json/.png, metrics.csv/.jsonl")
    return 0


def _run_records(run: Path) -> list:
    if (run / "history.json").is_file():
        return json.loads((run / "history.json").read_text())["epochs"]
    if (run / "metrics.jsonl").is_file():  # a run still in progress
        return [json.loads(ln) for ln in (run / "metrics.jsonl").read_text().splitlines() if ln.strip()]
    raise FileNotFoundError(f"{run} holds neither history.json nor metrics.jsonl: not a run directory")


def cmd_plot(args) -> int:
    from .plots import plot_runs

    runs = {str(r): _run_records(r) for r in args.runs}
    print(f"wrote {plot_runs(runs, args.out)}")
    return 0


def _trained(run_dir: Path):
    from . import checkpoint

    path = run_dir / "weights.safetensors"
    if not path.is_file():
        raise FileNotFoundError(f"{run_dir} has no weights.safetensors: not a finished run directory")
    meta, _ = checkpoint.read(path)
    settings = {}
    if (run_dir / "checkpoint.safetensors").is_file():
        settings = checkpoint.read(run_dir / "checkpoint.safetensors")[0].get("train_args", {})
    return checkpoint.load(path), meta, settings


def cmd_evaluate(args) -> int:
    from sklearn.metrics import confusion_matrix

    from . import data

    net, meta, settings = _trained(args.run_dir)
    name = args.data or settings.get("data") or meta.get("data")
    if name is None:
        raise ValueError(f"{args.run_dir} does not record its data; pass --data")
    data_dir = args.data_dir or (Path(settings["data_dir"]) if settings.get("data_dir") else None)
    ds = data.scale(data.load(name, data_dir, seed=settings.get("seed", 0), target=args.target or settings.get("target", -1)),
                    settings.get("scale", "none"))
    result = {"run": str(args.run_dir), "data": name, "n": len(ds.X_test), "cost": net.cost(ds.X_test, ds.y_test)}
    print(f"{name} test split ({len(ds.X_test)} examples): cost {result['cost']:.5f}", end="")
    if ds.n_classes is not None:
        pred = net.predict(ds.X_test)
        labels = (pred[:, 0] > 0.5).astype(int) if pred.shape[1] == 1 else pred.argmax(axis=1)
        cm = confusion_matrix(ds.y_test, labels, labels=list(range(max(ds.n_classes, pred.shape[1]))))
        result["accuracy"] = float(np.trace(cm) / cm.sum())
        result["confusion_matrix"] = cm.tolist()
        print(f", accuracy {result['accuracy']:.4f}\nconfusion matrix (rows: true class, columns: predicted):")
        width = max(3, len(str(cm.max())))
        print("     " + " ".join(f"{j:>{width}}" for j in range(cm.shape[1])))
        for i, row in enumerate(cm):
            print(f"{i:>4} " + " ".join(f"{v:>{width}}" for v in row))
    else:
        print()
    if args.out is not None:
        args.out.write_text(json.dumps(result, indent=1) + "\n")
    return 0


def cmd_predict(args) -> int:
    from .data.files import read_rows

    net, _, _ = _trained(args.run_dir)
    X = read_rows(args.input)
    out = np.asarray(net.predict(X))
    if not args.proba:
        out = ((out[:, 0] > 0.5).astype(np.int64) if net.output_activation.name in ("sigmoid", "softmax") else out[:, 0]) \
            if out.shape[1] == 1 else out.argmax(axis=1)
    if args.out is None:
        np.savetxt(sys.stdout, out, fmt="%d" if out.dtype.kind == "i" else "%.6g", delimiter=",")
    elif args.out.suffix.lower() == ".npy":
        np.save(args.out, out)
    else:
        np.savetxt(args.out, out, fmt="%d" if out.dtype.kind == "i" else "%.6g", delimiter=",")
    return 0


def cmd_lab(args) -> int:
    from .lab import run

    kwargs = {"seed": args.seed, "out": args.out, "quick": args.quick}
    if args.experiment != "minima":
        kwargs.update(data=args.data, data_dir=args.data_dir)
    result = run(args.experiment, **kwargs)
    print(f"{result.title}\n\n{result.format_table()}\n\n{result.reading}\n\nwrote {result.figure} and {result.json}")
    return 0


def cmd_report(args) -> int:
    from .lab.report import write_report

    page = write_report(args.out, quick=args.quick, data=args.data, data_dir=args.data_dir, seed=args.seed,
                        progress=lambda name: print(f"running {name} ...", flush=True))
    print(f"wrote {page}")
    return 0


def main(argv=None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return args.run(args)
    except (ValueError, TypeError, OSError, DivergenceError) as e:
        print(f"sgdlab: error: {e}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("sgdlab: interrupted", file=sys.stderr)
        return 130
