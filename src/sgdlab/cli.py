"""The ``sgdlab`` command (also ``python -m sgdlab``)."""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import signal
import sys
from pathlib import Path

try:
    import fcntl
except ImportError:  # not POSIX: no run-directory lock
    fcntl = None

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
    t.add_argument("--quiet", action="store_true", help="print only the final result")
    t.add_argument("--out", type=Path, default=None,
                   help="run directory: checkpoint.safetensors (resumable), weights.safetensors, network.json, "
                   "history.csv/.json/.png, and metrics.csv/.jsonl written while training runs; SIGINT/SIGTERM "
                   "finish the current update, save and exit")
    t.add_argument("--checkpoint-every", type=int, default=None, metavar="N",
                   help="with --out: also save the resumable checkpoint every N epochs (default 0: only at the end or on "
                   "a signal; a resumed run keeps its own N unless given)")
    t.add_argument("--resume", type=Path, default=None, metavar="DIR",
                   help="continue the run in DIR exactly where it stopped, with its saved settings (--epochs may raise the total; "
                   "--checkpoint-every and --data-dir may change; any other setting given must equal the saved one)")
    t.add_argument("--overwrite", action="store_true",
                   help="with --out: start again in a directory that already holds a run, replacing its files")
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


TRAIN_SETTINGS = ("checkpoint_every", "data", "data_dir", "target", "scale", "method", "batch_size", "lr", "epochs", "hidden", "activation", "output_activation",
                  "cost", "init", "sampling", "momentum", "nesterov", "weight_decay", "dtype", "seed")


def _fingerprint(ds) -> str:
    """SHA-256 of the training data, to refuse resuming a run on other data."""
    from .checkpoint import digest

    return digest({"X_train": ds.X_train, "y_train": ds.y_train})


RUN_FILES = ("checkpoint.safetensors", "weights.safetensors", "network.json", "history.csv", "history.json",
             "history.png", "metrics.csv", "metrics.jsonl")
RESUME_MAY_CHANGE = ("epochs", "checkpoint_every", "data_dir")


class RunDirectory:
    """Exclusive use of a run directory for the life of a run: an ``flock`` on the directory itself.

    A second process training into the same directory is refused; a directory holding files is used
    only to resume (``--resume``) or to start again (``--overwrite``, which removes the run's files);
    temporaries left by a killed write are removed; a directory created for a run that failed before
    writing anything is removed again.
    """

    def __init__(self, path: Path, *, resume: bool, overwrite: bool):
        self.path, self.resume, self.overwrite, self.fd, self.created = path, resume, overwrite, None, False

    def __enter__(self) -> RunDirectory:
        from .checkpoint import remove_stale_temporaries

        path = self.path
        if self.resume and not path.is_dir():
            raise FileNotFoundError(f"checkpoint {path / 'checkpoint.safetensors'} does not exist")
        if path.exists() and not path.is_dir():
            raise NotADirectoryError(f"run directory {path} exists and is not a directory")
        self.created = not path.exists()
        path.mkdir(parents=True, exist_ok=True)
        self.fd = os.open(path, os.O_RDONLY | getattr(os, "O_DIRECTORY", 0))
        try:
            if fcntl is not None:
                try:
                    fcntl.flock(self.fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                except BlockingIOError:
                    raise RuntimeError(f"another sgdlab process is training in {path} (it holds the directory's lock); "
                                       "wait for it to finish or choose another --out") from None
            for name in ("checkpoint.safetensors", "weights.safetensors"):
                remove_stale_temporaries(path / name)
            if not self.resume:
                present = sorted(p.name for p in path.iterdir())
                if present and not self.overwrite:
                    raise FileExistsError(f"{path} is not empty ({', '.join(present[:4])}{', ...' if len(present) > 4 else ''}): "
                                          f"pass --resume {path} to continue its run, or --overwrite to start again, "
                                          "replacing its files")
                for name in RUN_FILES:
                    (path / name).unlink(missing_ok=True)
        except BaseException:
            self.__exit__()
            raise
        return self

    def __exit__(self, *exc):
        if self.fd is not None:
            os.close(self.fd)  # releases the lock
            self.fd = None
        if self.created:
            with contextlib.suppress(OSError):
                self.path.rmdir()  # only if the run wrote nothing
        return False


def _explicit_options(argv) -> set:
    """The train settings given on the command line (a resumed run must not silently ignore them)."""
    parser = build_parser()
    train = parser._subparsers._group_actions[0].choices["train"]
    for action in train._actions:
        action.default = argparse.SUPPRESS
    train._defaults.clear()
    given, _ = train.parse_known_args(list(argv)[1:])
    return set(vars(given))


def _saved_settings(meta: dict, path: Path) -> dict:
    """The settings a run saved (``train_args``), checked against the options' own types and choices."""
    if "train_args" not in meta:
        raise ValueError(f"{path} was saved from Python, not by `sgdlab train --out`: it records no data or settings "
                         "for the command line to resume with; load it with sgdlab.load_training and continue with fit")
    saved = meta["train_args"]
    actions = {a.dest: a for a in build_parser()._subparsers._group_actions[0].choices["train"]._actions}
    for k in TRAIN_SETTINGS:
        if k not in saved:
            raise ValueError(f"{path}: train_args lacks {k!r}")
        v, a = saved[k], actions[k]
        if v is None and a.default is None:
            continue
        if isinstance(a, argparse._StoreTrueAction):
            ok = isinstance(v, bool)
        elif a.type is _hidden:
            ok = isinstance(v, list) and all(isinstance(s, int) and not isinstance(s, bool) and s >= 1 for s in v)
        elif a.type is int:
            ok = isinstance(v, int) and not isinstance(v, bool)
        elif a.type is float:
            ok = isinstance(v, (int, float)) and not isinstance(v, bool)
        else:
            ok = isinstance(v, str)
        if not ok or (a.choices is not None and v not in a.choices):
            raise ValueError(f"{path}: saved setting {k}={v!r} is not a valid --{k.replace('_', '-')}")
    return {k: saved[k] for k in TRAIN_SETTINGS}


def _apply_saved_settings(args, saved: dict, path: Path) -> None:
    """Resume with the run's saved settings; a different value given on the command line is refused."""
    explicit = getattr(args, "explicit", None)
    normal = _absolute_data({k: (str(v) if isinstance(v, Path) else v) for k, v in vars(args).items()
                             if k in TRAIN_SETTINGS})
    for k, v in saved.items():
        given = normal[k]
        if explicit is not None and k in explicit and k not in RESUME_MAY_CHANGE and given != v:
            raise ValueError(f"--{k.replace('_', '-')} {given} differs from the run's saved {v!r}; a resumed run keeps its "
                             f"settings (only {', '.join('--' + m.replace('_', '-') for m in RESUME_MAY_CHANGE)} may "
                             f"change): drop the option, or start a new run with --out")
        if explicit is None or k not in explicit or k not in RESUME_MAY_CHANGE:
            setattr(args, k, Path(v) if k == "data_dir" and v is not None else v)


def _tree_shape(tree):
    """The structure of an optimizer state: containers, lengths, array shapes and scalar kinds."""
    if isinstance(tree, (list, tuple)):
        return (type(tree).__name__, tuple(_tree_shape(v) for v in tree))
    if tree is None or isinstance(tree, (bool, int, float, str)):
        return type(tree).__name__
    return ("array", tuple(tree.shape))


def _check_optimizer_state(opt_state, net, args, path: Path) -> None:
    """A resumed optimizer state must have the structure the run's own optimizer settings give."""
    from .optim import sgd

    expected = sgd(1.0, args.momentum, args.nesterov, args.weight_decay).init(net.params)
    if _tree_shape(opt_state) != _tree_shape(expected):
        raise ValueError(f"{path}: its optimizer state does not have the structure of SGD with momentum "
                         f"{args.momentum}, nesterov {args.nesterov}, weight decay {args.weight_decay} (its saved settings)")


def _absolute_data(settings: dict) -> dict:
    """Data paths stored absolute, so evaluate and resume work from any directory."""
    from .data import NAMES

    out = dict(settings)
    if out.get("data") not in NAMES and out.get("data") is not None:
        out["data"] = str(Path(out["data"]).resolve())
    if out.get("data_dir") is not None:
        out["data_dir"] = str(Path(out["data_dir"]).resolve())
    return out


def cmd_train(args) -> int:
    if args.resume is not None and args.overwrite:
        raise ValueError("--overwrite starts a run again; --resume continues it: give one of them")
    if args.resume is not None and args.out is not None and args.out.resolve() != args.resume.resolve():
        raise ValueError(f"--out {args.out} differs from --resume {args.resume}: a resumed run stays in its directory")
    if args.overwrite and args.out is None:
        raise ValueError("--overwrite needs --out DIR")
    if args.out is None and args.resume is None:
        return _train(args, None)
    with RunDirectory(args.resume or args.out, resume=args.resume is not None, overwrite=args.overwrite) as run:
        return _train(args, run)


def _train(args, run) -> int:
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
        net, state, meta = checkpoint.load_training(args.resume / "checkpoint.safetensors")
        _apply_saved_settings(args, _saved_settings(meta, args.resume / "checkpoint.safetensors"), args.resume)
        _check_optimizer_state(state.opt_state, net, args, args.resume / "checkpoint.safetensors")
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
        finishing = state.epoch >= args.epochs and not (out / "weights.safetensors").exists() \
            and given["epochs"] is None  # killed after its last checkpoint, before its final files: write them
        if state.epoch >= args.epochs and not finishing:
            raise ValueError(f"{args.resume} already has {state.epoch} epochs; pass --epochs N > {state.epoch} to train on")
    else:
        classes = ds.n_classes
        if classes is None:
            sizes, output = [ds.X_train.shape[1], *args.hidden, 1], args.output_activation or "identity"
        else:
            sizes, output = [ds.X_train.shape[1], *args.hidden, classes], args.output_activation
        net = Network(sizes, activation=args.activation, output_activation=output, cost=args.cost, init=args.init,
                      seed=args.seed, dtype=args.dtype)
        state, finishing = TrainState(), False
    if args.resume is not None and not finishing:
        (out / "weights.safetensors").unlink(missing_ok=True)  # the run is unfinished again until its end
    callbacks, bar = [], None
    if not args.quiet:
        if sys.stderr.isatty():
            bar = ProgressBar(args.epochs, initial=state.epoch)
            callbacks.append(bar)
        else:
            callbacks.append(EpochPrinter())
    stopper = SignalStop()
    if out is not None:
        settings = _absolute_data({k: (str(v) if isinstance(v, Path) else v) for k, v in vars(args).items()
                                   if k in TRAIN_SETTINGS})
        ckpt = Checkpointer(out / "checkpoint.safetensors", net, state, args.checkpoint_every,
                            extra={"train_args": settings, "data_sha256": fingerprint, "data": ds.name})
        callbacks += [MetricsLog(out, history=state.history if args.resume is not None else None), ckpt, stopper]
    try:
        with stopper if out is not None else contextlib.nullcontext():
            history = state.history if finishing else fit(
                net, ds.X_train, ds.y_train, method=args.method, batch_size=args.batch_size, lr=args.lr,
                epochs=args.epochs, sampling=args.sampling, momentum=args.momentum, nesterov=args.nesterov,
                weight_decay=args.weight_decay, seed=args.seed, validation=(ds.X_test, ds.y_test),
                callbacks=callbacks, state=state)
            if bar is not None:
                bar.close()
                bar = None
            if out is not None:  # still under the signal handler: a signal now lets these writes finish
                ckpt.save()
                history.to_csv(out / "history.csv")
                history.to_json(out / "history.json")
                (out / "network.json").write_text(json.dumps(net.describe(), indent=1) + "\n")
                checkpoint.save(out / "weights.safetensors", net, extra={"data": ds.name, "train_args": settings})
                plot_history(history, out / "history.png",
                             title=f"{ds.name}: {args.method}, m={history.config['batch_size']}")
    finally:
        if bar is not None:
            bar.close()
    last = history.last
    sizes = net.sizes
    if stopper.signum is not None and state.epoch >= args.epochs:
        name = signal.Signals(stopper.signum).name
        print(f"sgdlab: {name} received while writing the final files; they were completed: the run in {out} is "
              "finished", file=sys.stderr)
        return 128 + stopper.signum
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
    """(network, metadata, settings) of a run: its weights.safetensors, or, for a run that has not written
    them yet, the weights in its checkpoint. Settings come from the weights file itself where recorded."""
    from . import checkpoint

    path, ckpt = run_dir / "weights.safetensors", run_dir / "checkpoint.safetensors"
    if not path.is_file():
        if not ckpt.is_file():
            raise FileNotFoundError(f"{run_dir} has no weights.safetensors (nor a checkpoint.safetensors "
                                    "holding weights): not a run directory")
        path = ckpt
    meta, _ = checkpoint.read(path)
    settings = meta.get("train_args")
    if settings is None and path != ckpt and ckpt.is_file():
        try:
            settings = checkpoint.read(ckpt)[0].get("train_args")
        except ValueError as e:
            raise ValueError(f"{e}; its weights are intact but record no settings: pass --data and --target to "
                             "evaluate them") from None
    return checkpoint.load(path), meta, settings or {}


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
    argv = sys.argv[1:] if argv is None else list(argv)
    args = parser.parse_args(argv)
    if args.command == "train":
        args.explicit = _explicit_options(argv)
    try:
        return args.run(args)
    except (ValueError, TypeError, OSError, RuntimeError, DivergenceError) as e:
        print(f"sgdlab: error: {e}", file=sys.stderr)
        return 1
    except MemoryError as e:
        print(f"sgdlab: error: out of memory{': ' + str(e) if str(e) else ''}; use smaller data or a smaller network",
              file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("sgdlab: interrupted", file=sys.stderr)
        return 130
