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
from .distributed import DistributedError, fail, launched_rank, multi_rank
from .init import INITIALIZERS
from .sampling import ORDERS
from .train import METHODS, DivergenceError


def _hidden(text: str) -> list[int]:
    if text.strip() in ("", "none"):
        return []
    try:
        sizes = [int(s) for s in text.split(",")]
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"--hidden takes comma-separated layer widths like 30,30; got {text!r}"
        ) from None
    if any(s < 1 for s in sizes):
        raise argparse.ArgumentTypeError(f"hidden layer widths must be >= 1; got {text!r}")
    return sizes


class _Parser(argparse.ArgumentParser):
    """argparse, with errors as one line ``sgdlab: error: ...`` and exit status 1, as every other error."""

    def error(self, message):
        self.exit(1, f"sgdlab: error: {message}\n")


# the lab's experiment names, here so that `sgdlab --help` need not import the lab (tests check they match)
LAB_EXPERIMENTS = ("unbiased", "variance", "noise-scale", "compare", "redundancy", "minima", "symmetry", "throughput",
                   "frontier", "lr-batch", "sharpness", "gradient-norms", "parallel")

# per-method and per-task defaults where the shared ones fail (measured on digits and `linear`; README)
DEFAULT_LR = {("classification", "minibatch"): 3.0, ("classification", "stochastic"): 3.0,
              ("classification", "batch"): 3.0, ("regression", "minibatch"): 0.1,
              ("regression", "stochastic"): 0.01, ("regression", "batch"): 0.3}
DEFAULT_EPOCHS = {"minibatch": 30, "stochastic": 30, "batch": 200}


class _Help(argparse.ArgumentDefaultsHelpFormatter):
    """Shows defaults, except the uninformative None and False."""

    def _get_help_string(self, action):
        return action.help if action.default in (None, False) else super()._get_help_string(action)


def _add_task_arg(p):
    p.add_argument("--task", choices=("classification", "regression"), default=None,
                   help="what the target of a table is (default: guessed as scikit-learn's type_of_target: words or "
                   "integers with at most 20 distinct values are classes, other numbers are real-valued)")


def _add_validation_args(p):
    g = p.add_argument_group("validation and early stopping")
    g.add_argument("--validation-split", type=float, default=0.1, metavar="F",
                   help="fraction of the training data set aside for validation, stratified for classes (0: none)")
    g.add_argument("--patience", type=int, default=None, metavar="N",
                   help="stop when --monitor has not improved for N epochs (default: never stop early)")
    g.add_argument("--min-delta", type=float, default=0.0, help="smallest change of --monitor counted as improvement")
    g.add_argument("--monitor", choices=("val_cost", "val_accuracy", "train_cost", "train_accuracy", "mean_batch_cost"),
                   default="val_cost", help="what early stopping and --reduce-lr-on-plateau watch (train_cost and "
                   "train_accuracy imply --eval-train every; mean_batch_cost: the epoch's mean of the batch costs)")
    g.add_argument("--eval-train", choices=tuple(EVAL_TRAIN), default=None,
                   help="when the exact cost and accuracy over the whole training set (a forward pass over it) go "
                   "into the epoch records: every epoch, the first and last (ends, the default), or never. Every epoch "
                   "records its mean batch cost either way. Not a saved setting: a resumed run uses what is given")
    g.add_argument("--restore-best", action="store_true",
                   help="end with the weights of the epoch with the best --monitor (not the last epoch's)")
    g.add_argument("--reduce-lr-on-plateau", action="store_true",
                   help="multiply the learning rate by --plateau-factor when --monitor stalls for "
                   "--plateau-patience epochs")
    g.add_argument("--plateau-factor", type=float, default=0.5, metavar="F", help="factor for --reduce-lr-on-plateau")
    g.add_argument("--plateau-patience", type=int, default=3, metavar="N", help="patience for --reduce-lr-on-plateau")


LR_SCHEDULES = ("constant", "inverse-time", "exponential", "step", "cosine")
EVAL_TRAIN = {"ends": None, "every": True, "never": False}  # --eval-train: fit's eval_train


def _eval_train(args):
    """fit's eval_train from --eval-train; watching train_cost/train_accuracy needs it in every epoch (implied
    when --eval-train is not given, refused when it says otherwise)."""
    mode = args.eval_train
    if args.monitor.startswith("train_") and (args.patience or args.reduce_lr_on_plateau or args.restore_best):
        if mode not in (None, "every"):
            raise ValueError(f"--monitor {args.monitor} needs the training set evaluated after every epoch: "
                             f"--eval-train every, not {mode}")
        mode = "every"
    return EVAL_TRAIN[mode or "ends"]


def _add_schedule_args(p):
    g = p.add_argument_group("learning-rate schedule (eta_t of the update count t; E = updates per epoch)")
    g.add_argument("--lr-schedule", choices=LR_SCHEDULES, default="constant",
                   help="constant: eta; inverse-time: eta/(1 + d t/E); exponential: eta f^(t/(k E)); "
                   "step: eta f^floor(t/(k E)); cosine: from eta to 0 over the run")
    g.add_argument("--lr-decay", type=float, default=0.1, metavar="D", help="d, per epoch, of inverse-time")
    g.add_argument("--lr-factor", type=float, default=0.5, metavar="F", help="f of exponential and step")
    g.add_argument("--lr-every", type=float, default=10, metavar="K", help="k epochs of exponential and step")


def _add_lr_find_parser(sub):
    from .activations import HIDDEN_ACTIVATIONS as acts

    f = sub.add_parser("lr-find", help="learning-rate range test: cost against a geometric sweep of eta, a suggestion",
                       description="Smith's learning-rate range test (as PyTorch Lightning's lr_find and fastai): "
                       "from the same initial weights, a short run whose eta grows geometrically from --lr-min to "
                       "--lr-max, one update per step; plots the smoothed cost against eta and suggests the eta of its "
                       "steepest descent, and the largest eta before the cost blows up.", formatter_class=_Help)
    f.add_argument("--data", default="digits", help="as for train")
    f.add_argument("--target", default="-1", help="as for train")
    f.add_argument("--data-dir", type=Path, default=None, help="as for train")
    f.add_argument("--scale", choices=("none", "standard", "minmax"), default="none", help="as for train")
    _add_task_arg(f)
    f.add_argument("--method", choices=METHODS, default="minibatch", help="as for train")
    f.add_argument("--batch-size", type=int, default=None, help="m for minibatch (default 10)")
    f.add_argument("--hidden", type=_hidden, default=[30], help="as for train")
    f.add_argument("--activation", choices=acts, default="sigmoid", help="hidden activation")
    f.add_argument("--output-activation", choices=("sigmoid", "softmax", "tanh", "relu", "identity"), default=None,
                   help="as for train")
    f.add_argument("--cost", choices=tuple(COSTS), default="quadratic", help="cost function")
    f.add_argument("--init", choices=tuple(INITIALIZERS), default="glorot", help="weight initialiser")
    f.add_argument("--momentum", type=float, default=0.0, help="momentum mu in [0, 1)")
    f.add_argument("--dtype", choices=("float32", "float64"), default="float32")
    f.add_argument("--seed", type=int, default=0, help="seed for the initial weights and the batches")
    f.add_argument("--lr-min", type=float, default=1e-4, help="first eta of the sweep")
    f.add_argument("--lr-max", type=float, default=100.0, help="last eta of the sweep")
    f.add_argument("--steps", type=int, default=300, help="updates in the sweep (one eta each)")
    f.add_argument("--out", type=Path, default=Path("lr-find.png"), help="the PNG to write (also .json beside it)")
    f.set_defaults(run=cmd_lr_find)


def build_parser() -> argparse.ArgumentParser:
    from . import __version__

    parser = _Parser(prog="sgdlab", description="Train neural networks by batch, stochastic and "
                     "mini-batch gradient descent, and measure how the variants behave.")
    parser.add_argument("--version", action="version", version=f"sgdlab {__version__}")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    t = sub.add_parser("train", help="train a network and report test accuracy and cost",
                       description="Train a feedforward network. With no options: 64-30-10 sigmoid network, quadratic "
                       "cost, mini-batch SGD (m=10, eta=3.0, 30 epochs) on scikit-learn's embedded 8x8 digits, 10%% of "
                       "the training data set aside for validation (reported every epoch), the test split evaluated "
                       "once at the end. Defaults per method and task where the shared ones fail: batch GD 200 epochs; "
                       "real-valued targets eta=0.1 (minibatch), 0.01 (stochastic), 0.3 (batch).",
                       formatter_class=_Help)
    t.add_argument(
        "--data",
        default="digits",
        help="digits (embedded), mnist, fashion-mnist, blobs, spirals, linear, or a path to a .npz/.npy/.csv file",
    )
    t.add_argument(
        "--target", default="-1", help="the target column of a .npy/.npz table or .csv: index or header name"
    )
    t.add_argument("--scale", choices=("none", "standard", "minmax"), default="none",
                   help="feature scaling, fitted on the training split only")
    t.add_argument(
        "--data-dir",
        type=Path,
        default=None,
        help="where the MNIST IDX files are (default: $SGDLAB_DATA, else ~/.cache/sgdlab/mnist; downloaded if missing)",
    )
    t.add_argument("--method", choices=METHODS, default="minibatch",
                   help="batch: exact gradient over all n; stochastic: one example per update; minibatch: m examples")
    t.add_argument("--batch-size", type=int, default=None, help="m for minibatch (default 10)")
    t.add_argument("--lr", type=float, default=None, help="learning rate eta > 0 (default 3.0; see above)")
    t.add_argument("--epochs", type=int, default=None,
                   help="passes over the training data (default 30, batch 200; with --resume, the new total)")
    t.add_argument(
        "--hidden", type=_hidden, default=[30], help="hidden layer widths, e.g. 30,30 ('none' for no hidden layer)"
    )
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
    t.add_argument(
        "--checkpoint-every",
        type=int,
        default=None,
        metavar="N",
        help="with --out: also save the resumable checkpoint every N epochs (default 0: only at the end or on "
        "a signal; a resumed run keeps its own N unless given)",
    )
    t.add_argument(
        "--resume",
        type=Path,
        default=None,
        metavar="DIR",
        help="continue the run in DIR exactly where it stopped, with its saved settings (--epochs may raise the total; "
        "--checkpoint-every and --data-dir may change; any other setting given must equal the saved one)",
    )
    t.add_argument("--overwrite", action="store_true",
                   help="with --out: start again in a directory that already holds a run, replacing its files")
    _add_task_arg(t)
    _add_validation_args(t)
    _add_schedule_args(t)
    _add_distributed_arguments(t)
    t.set_defaults(run=cmd_train)
    _add_lr_find_parser(sub)

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
    pr.add_argument("--proba", action="store_true",
                    help="class probabilities instead of labels (softmax outputs, or one sigmoid output)")
    pr.set_defaults(run=cmd_predict)

    lab = sub.add_parser("lab", help="run one gradient-descent experiment: a figure, its numbers, a table",
                         description="Measure and show one claim behind batch, stochastic and mini-batch descent. "
                         "Writes OUT/EXPERIMENT.png and OUT/EXPERIMENT.json and prints a table.",
                         formatter_class=_Help)
    lab.add_argument("experiment", choices=LAB_EXPERIMENTS, help="which experiment")
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


VALIDATION_SETTINGS = ("task", "validation_split", "patience", "min_delta", "monitor", "restore_best",
                       "reduce_lr_on_plateau", "plateau_factor", "plateau_patience", "lr_schedule", "lr_decay",
                       "lr_factor", "lr_every")


def _add_device_option(p) -> None:
    p.add_argument(
        "--device",
        choices=("cpu", "cuda", "auto"),
        default="cpu",
        help="cpu: NumPy; cuda: a GPU through PyTorch (else CuPy); auto: a GPU when one is visible, else cpu. "
        "Not a saved setting: a resumed run goes where --device says",
    )


def _device_backend(device: str):
    """The Backend for --device: NumPy on the CPU; on a GPU PyTorch with CUDA, else CuPy (a clear error if none)."""
    from .backend import gpu_backend, resolve_backend

    return resolve_backend("numpy") if device == "cpu" else gpu_backend(device)


TRAIN_SETTINGS = ("checkpoint_every", "data", "data_dir", "target", "scale", "method", "batch_size", "lr", "epochs",
                  "hidden", "activation", "output_activation", "cost", "init", "sampling", "momentum", "nesterov",
                  "weight_decay", "dtype", "seed")
TRAIN_SETTINGS = VALIDATION_SETTINGS + TRAIN_SETTINGS


def _fingerprint(ds) -> str:
    """SHA-256 of the training data, to refuse resuming a run on other data."""
    from .checkpoint import digest

    return digest({"X_train": ds.X_train, "y_train": ds.y_train})


def _add_distributed_arguments(t) -> None:
    from .distributed import REDUCTIONS

    g = t.add_argument_group("training on several processes", "run as `mpiexec -n P sgdlab train ...` (or srun): P "
                             "ranks train one model and make the updates of one process (see README)")
    g.add_argument("--reduction", choices=REDUCTIONS, default=None,
                   help="how the ranks combine gradient sums: allreduce (default; equal to one process up to float "
                   "rounding) or exact (bit-identical for any number of ranks)")
    g.add_argument("--sync-every", type=int, default=None, metavar="K",
                   help="local SGD (--method stochastic on several ranks): average the parameters every K updates "
                   "(default 1)")


def _distributed(args, meta):
    """(World or None, whether this process writes files and prints): rank 0 does, the others stay quiet."""
    from .distributed import command_world

    saved = (meta or {}).get("distributed") or {}
    world = command_world(args.reduction or saved.get("reduction"), args.sync_every or saved.get("sync_every"))
    return world, world is None or world.is_root


RUN_FILES = ("checkpoint.safetensors", "weights.safetensors", "network.json", "test.json", "classes.json",
             "history.csv", "history.json",
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
                    raise FileExistsError(
                        f"{path} is not empty ({', '.join(present[:4])}{', ...' if len(present) > 4 else ''}): "
                        f"pass --resume {path} to continue its run, or --overwrite to start again, "
                        "replacing its files"
                    )
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
            raise ValueError(
                f"--{k.replace('_', '-')} {given} differs from the run's saved {v!r}; a resumed run keeps its "
                f"settings (only {', '.join('--' + m.replace('_', '-') for m in RESUME_MAY_CHANGE)} may "
                f"change): drop the option, or start a new run with --out"
            )
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
        raise ValueError(
            f"{path}: its optimizer state does not have the structure of SGD with momentum "
            f"{args.momentum}, nesterov {args.nesterov}, weight decay {args.weight_decay} (its saved settings)"
        )


def _absolute_data(settings: dict) -> dict:
    """Data paths stored absolute, so evaluate and resume work from any directory."""
    from .data import NAMES

    out = dict(settings)
    if out.get("data") not in NAMES and out.get("data") is not None:
        out["data"] = str(Path(out["data"]).resolve())
    if out.get("data_dir") is not None:
        out["data_dir"] = str(Path(out["data_dir"]).resolve())
    return out


def _network(args, ds, where=None):
    from .network import Network

    if ds.n_classes is None:
        sizes, output = [ds.X_train.shape[1], *args.hidden, 1], args.output_activation or "identity"
    else:
        sizes, output = [ds.X_train.shape[1], *args.hidden, ds.n_classes], args.output_activation
    backend = {} if where is None else {"backend": where.name, "device": where.device}
    return Network(sizes, activation=args.activation, output_activation=output, cost=args.cost, init=args.init,
                   seed=args.seed, dtype=args.dtype, **backend)


def _task(ds) -> str:
    return "regression" if ds.n_classes is None else "classification"


def _method_defaults(args, task: str) -> None:
    """The learning rate and epochs not given: per method and task (DEFAULT_LR, DEFAULT_EPOCHS)."""
    if args.lr is None:
        args.lr = DEFAULT_LR[(task, args.method)]
    if getattr(args, "epochs", 0) is None:
        args.epochs = DEFAULT_EPOCHS[args.method]


def _schedule(args, per_epoch: int):
    """--lr-schedule as a function of the update count t (E = per_epoch updates per epoch)."""
    from . import schedules

    lr, E = args.lr, per_epoch
    if args.lr_schedule in ("exponential", "step") and not (0 < args.lr_factor < 1 and args.lr_every > 0):
        raise ValueError(f"--lr-schedule {args.lr_schedule} needs 0 < --lr-factor < 1 and --lr-every > 0; got "
                         f"{args.lr_factor} and {args.lr_every}")
    if args.lr_schedule == "inverse-time":
        if not args.lr_decay >= 0:
            raise ValueError(f"--lr-decay must be >= 0; got {args.lr_decay}")
        return schedules.inverse_time(lr, args.lr_decay / E)
    if args.lr_schedule == "exponential":
        return schedules.exponential(lr, args.lr_factor, max(1, round(args.lr_every * E)))
    if args.lr_schedule == "step":
        return schedules.step(lr, args.lr_factor, max(1, round(args.lr_every * E)))
    if args.lr_schedule == "cosine":
        return schedules.cosine(lr, args.epochs * E)
    return lr


def _stopping(args, net, lr, validation: bool):
    """(callbacks, EarlyStopping or None, lr to train with): --patience, --restore-best, --reduce-lr-on-plateau."""
    from .callbacks import EarlyStopping, ReduceLROnPlateau

    if args.monitor.startswith("val_") and not validation and (args.patience or args.reduce_lr_on_plateau
                                                               or args.restore_best):
        raise ValueError(f"--monitor {args.monitor} needs validation data: --validation-split > 0")
    patience = args.patience or (args.epochs + 1 if args.restore_best else None)  # restore without stopping early
    found, stop = [], None
    if patience is not None:
        stop = EarlyStopping(args.monitor, patience, args.min_delta, restore_best=args.restore_best, net=net)
        found.append(stop)
    if args.reduce_lr_on_plateau:
        plateau = ReduceLROnPlateau(lr, args.monitor, args.plateau_factor, args.plateau_patience, args.min_delta)
        found.append(plateau)
        lr = plateau.schedule
    return found, stop, lr


def _test_result(net, ds) -> dict:
    """Cost and accuracy on the test split: evaluated once, after training."""
    result = {"n": len(ds.X_test), "cost": float(net.cost(ds.X_test, ds.y_test))}
    if ds.n_classes is not None:
        result["accuracy"] = float(net.accuracy(ds.X_test, ds.y_test))
    return result


def _labels(net, X):
    """Class codes (argmax, or a threshold at 0.5 for one sigmoid output), or real values."""
    out = np.asarray(net.predict(X))
    if out.shape[1] == 1:
        return (out[:, 0] > 0.5).astype(np.int64) if net.output_activation.name in ("sigmoid", "softmax") else out[:, 0]
    return out.argmax(axis=1)


def cmd_train(args) -> int:
    if args.resume is not None and args.overwrite:
        raise ValueError("--overwrite starts a run again; --resume continues it: give one of them")
    if args.resume is not None and args.out is not None and args.out.resolve() != args.resume.resolve():
        raise ValueError(f"--out {args.out} differs from --resume {args.resume}: a resumed run stays in its directory")
    if args.overwrite and args.out is None:
        raise ValueError("--overwrite needs --out DIR")
    if args.out is None and args.resume is None or launched_rank() != 0:
        return _train(args, None)  # under MPI rank 0 alone holds the run directory and writes to it
    with RunDirectory(args.resume or args.out, resume=args.resume is not None, overwrite=args.overwrite) as run:
        return _train(args, run)


def _train(args, run) -> int:
    from . import checkpoint, data
    from .callbacks import (
        Checkpointer,
        EpochPrinter,
        MetricsLog,
        ProgressBar,
        SignalStop,
    )
    from .data.dataset import split_validation
    from .diagnose import diagnose
    from .distributed import signal_stop
    from .plots import plot_history
    from .train import TrainState, fit, resolve_batch_size

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
        _apply_saved_settings(args, _saved_settings(meta, args.resume / "checkpoint.safetensors"), args.resume)
        _check_optimizer_state(state.opt_state, net, args, args.resume / "checkpoint.safetensors")
        for k, v in given.items():
            if v is not None:
                setattr(args, k, v)
    if args.checkpoint_every is None:
        args.checkpoint_every = 0
    eval_train = _eval_train(args)
    world, root = _distributed(args, meta if args.resume is not None else None)
    say = print if root else (lambda *a, **k: None)
    ds = data.scale(data.load(args.data, args.data_dir, seed=args.seed, target=args.target, task=args.task), args.scale)
    _method_defaults(args, _task(ds))
    fingerprint = _fingerprint(ds)
    if args.resume is not None:
        if meta.get("data_sha256") != fingerprint:
            raise ValueError(
                f"the data of {args.data!r} differs from the data {args.resume} was trained on; cannot resume"
            )
        finishing = state.epoch >= args.epochs and not (out / "weights.safetensors").exists() \
            and given["epochs"] is None  # killed after its last checkpoint, before its final files: write them
        if state.epoch >= args.epochs and not finishing:
            raise ValueError(
                f"{args.resume} already has {state.epoch} epochs; pass --epochs N > {state.epoch} to train on"
            )
    else:
        net = _network(args, ds, _device_backend(args.device))
        state, finishing = TrainState(), False
    if args.resume is not None and not finishing:
        (out / "weights.safetensors").unlink(missing_ok=True)  # the run is unfinished again until its end
    X_train, y_train, validation = ds.X_train, ds.y_train, None
    if args.validation_split:
        X_train, y_train, validation = split_validation(X_train, y_train, args.validation_split, args.seed)
    per_epoch = -(-len(X_train) // resolve_batch_size(args.method, args.batch_size, len(X_train)))
    fit_callbacks, early, lr = _stopping(args, net, _schedule(args, per_epoch), validation is not None)
    if args.resume is not None and args.reduce_lr_on_plateau and state.step > 0 and state.history.epochs[-1].get("lr"):
        lr.scale = state.history.epochs[-1]["lr"] / lr.base(state.step - 1)  # the reductions made before the stop
    callbacks, bar = [], None
    if not args.quiet and root:
        if sys.stderr.isatty():
            bar = ProgressBar(args.epochs, per_epoch, initial_epoch=state.epoch)
            callbacks.append(bar)
        else:
            callbacks.append(EpochPrinter())
    callbacks += fit_callbacks
    stopper = SignalStop() if world is None else signal_stop(world)
    if out is not None and not root:
        callbacks.append(stopper)
    elif out is not None:
        settings = _absolute_data({k: (str(v) if isinstance(v, Path) else v) for k, v in vars(args).items()
                                   if k in TRAIN_SETTINGS})
        ckpt = Checkpointer(out / "checkpoint.safetensors", net, state, args.checkpoint_every,
                            extra={"train_args": settings, "data_sha256": fingerprint, "data": ds.name,
                                   "distributed": None if world is None else world.describe()})
        callbacks += [MetricsLog(out, history=state.history if args.resume is not None else None), ckpt, stopper]
    try:
        with stopper if out is not None else contextlib.nullcontext():
            history = state.history if finishing else fit(
                net, X_train, y_train, method=args.method, batch_size=args.batch_size, lr=lr,
                epochs=args.epochs, sampling=args.sampling, momentum=args.momentum, nesterov=args.nesterov,
                weight_decay=args.weight_decay, seed=args.seed, validation=validation, eval_train=eval_train,
                callbacks=callbacks, state=state, comm=world)
            if bar is not None:
                bar.close()
                bar = None
            for cb in fit_callbacks:
                if hasattr(cb, "on_train_end"):
                    cb.on_train_end(history)  # restores the best weights (harmless if fit called it already)
            test = _test_result(net, ds)
            history.config["test"] = test
            if out is not None and root:  # still under the signal handler: a signal now lets these writes finish
                ckpt.save()
                history.to_csv(out / "history.csv")
                history.to_json(out / "history.json")
                (out / "network.json").write_text(json.dumps(net.describe(), indent=1) + "\n")
                (out / "test.json").write_text(json.dumps({"split": "test", "data": ds.name, **test}, indent=1) + "\n")
                (out / "classes.json").write_text(json.dumps({"task": _task(ds), "classes": ds.classes}) + "\n")
                checkpoint.save(out / "weights.safetensors", net, extra={"data": ds.name, "train_args": settings})
                plot_history(history, out / "history.png",
                             title=f"{ds.name}: {args.method}, m={history.config['batch_size']}")
    finally:
        if bar is not None:
            bar.close()
    sizes = net.sizes
    if stopper.signum is not None and state.epoch >= args.epochs:
        name = signal.Signals(stopper.signum).name
        say(f"sgdlab: {name} received while writing the final files; they were completed: the run in {out} is "
              "finished", file=sys.stderr)
        return 128 + stopper.signum
    if stopper.signum is not None:
        name = signal.Signals(stopper.signum).name
        say(f"sgdlab: stopped by {name} after update {state.step} (epoch {state.epoch + (state.position > 0)}); "
              f"saved {out / 'checkpoint.safetensors'}; continue with: sgdlab train --resume {out}", file=sys.stderr)
        return 128 + stopper.signum
    acc = "" if "accuracy" not in test else f"test accuracy {test['accuracy']:.4f}, "
    ran = history.last["epoch"]
    epochs = f"{ran} epochs" if ran == args.epochs else f"{ran} of {args.epochs} epochs (stopped early)"
    if early is not None and early.restore_best and history.config.get("restored_best_epoch") is not None:
        epochs += f", weights of epoch {history.config['restored_best_epoch']}"
    say(f"{ds.name}: {'-'.join(map(str, sizes))} network, {args.method} (m={history.config['batch_size']}), "
          f"{epochs} in {history.last['train_seconds']:.2f} s: {acc}test cost {test['cost']:.5f}")
    for sentence in diagnose(history, y_train=y_train if ds.n_classes is not None else None, y_eval=ds.y_test,
                             predicted=_labels(net, ds.X_test), lr=args.lr):
        say(f"warning: {sentence}")
    if out is not None and not args.quiet:
        say(f"wrote {out}/: checkpoint.safetensors, weights.safetensors, network.json, test.json, classes.json, "
              "history.csv/.json/.png, metrics.csv/.jsonl")
    return 0


def _run_records(run: Path) -> list:
    if (run / "history.json").is_file():
        try:
            records = json.loads((run / "history.json").read_text())["epochs"]
        except (json.JSONDecodeError, KeyError, TypeError) as e:
            raise ValueError(f"{run / 'history.json'} is not a history written by sgdlab (no list of \"epochs\": "
                             f"{type(e).__name__}: {e})") from None
        if not isinstance(records, list) or not all(isinstance(r, dict) for r in records):
            raise ValueError(f"{run / 'history.json'}: \"epochs\" must be a list of epoch records")
        return records
    if (run / "metrics.jsonl").is_file():  # a run still in progress
        return [json.loads(ln) for ln in (run / "metrics.jsonl").read_text().splitlines() if ln.strip()]
    raise FileNotFoundError(f"{run} holds neither history.json nor metrics.jsonl: not a run directory")


def cmd_plot(args) -> int:
    from .plots import plot_runs

    names = [r.resolve().name or str(r) for r in args.runs]  # short labels: the run directories' names
    runs = {}
    for r, name in zip(args.runs, names, strict=True):
        runs[name if names.count(name) == 1 else str(r)] = _run_records(r)
    has_accuracy = any(rec.get("val_accuracy") is not None or rec.get("train_accuracy") is not None
                       for recs in runs.values() for rec in recs)
    print(f"wrote {plot_runs(runs, args.out, accuracy=has_accuracy)}")
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
    target = args.target or settings.get("target", -1)
    ds = data.scale(data.load(name, data_dir, seed=settings.get("seed", 0), target=target, task=settings.get("task")),
                    settings.get("scale", "none"))
    result = {"run": str(args.run_dir), "data": name, "split": "test", "n": len(ds.X_test),
              "cost": float(net.cost(ds.X_test, ds.y_test))}
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
        if ds.classes is not None:
            result["classes"] = list(ds.classes)
            print("classes: " + ", ".join(f"{i}={c}" for i, c in enumerate(ds.classes)))
    else:
        print()
    if args.out is not None:
        args.out.write_text(json.dumps(result, indent=1) + "\n")
    return 0


def _run_classes(run_dir: Path):
    """The original class labels saved with a run (classes.json), or None."""
    path = run_dir / "classes.json"
    if not path.is_file():
        return None
    try:
        classes = json.loads(path.read_text()).get("classes")
    except (json.JSONDecodeError, AttributeError) as e:
        raise ValueError(f"{path} is not a classes file written by sgdlab: {e}") from None
    return classes


def cmd_predict(args) -> int:
    from .data.files import read_rows

    net, _, _ = _trained(args.run_dir)
    X = read_rows(args.input)
    if args.proba:
        name, k = net.output_activation.name, net.sizes[-1]
        if not (name == "softmax" or (name == "sigmoid" and k == 1)):
            raise ValueError(f"--proba needs outputs that are probabilities (softmax, or one sigmoid output); this "
                             f"network has {k} {name} outputs, which are not (use the class labels, without --proba)")
        out = np.asarray(net.predict(X))
    else:
        out = _labels(net, X)
        classes = _run_classes(args.run_dir)
        if classes is not None and out.dtype.kind == "i":
            if out.max(initial=0) >= len(classes):
                raise ValueError(f"the network predicts class {out.max()} but {args.run_dir}/classes.json lists "
                                 f"{len(classes)} classes")
            out = np.asarray(classes, dtype=object)[out]
    if out.dtype == object:  # original labels: words or numbers
        text = "\n".join(str(v) for v in out) + "\n"
        if args.out is None:
            sys.stdout.write(text)
        elif args.out.suffix.lower() == ".npy":
            words = any(isinstance(v, str) for v in out)
            np.save(args.out, np.asarray([str(v) for v in out]) if words else out.astype(np.int64))
        else:
            args.out.write_text(text)
        return 0
    if args.out is None:
        np.savetxt(sys.stdout, out, fmt="%d" if out.dtype.kind == "i" else "%.6g", delimiter=",")
    elif args.out.suffix.lower() == ".npy":
        np.save(args.out, out)
    else:
        np.savetxt(args.out, out, fmt="%d" if out.dtype.kind == "i" else "%.6g", delimiter=",")
    return 0


def cmd_lr_find(args) -> int:
    from . import data
    from .lrfinder import lr_find

    ds = data.scale(data.load(args.data, args.data_dir, seed=args.seed, target=args.target, task=args.task), args.scale)
    net = _network(args, ds)
    result = lr_find(net, ds.X_train, ds.y_train, method=args.method, batch_size=args.batch_size, lr_min=args.lr_min,
                     lr_max=args.lr_max, steps=args.steps, momentum=args.momentum, seed=args.seed)
    result.plot(args.out, title=f"{ds.name}: {'-'.join(map(str, net.sizes))}, {args.method} (m={result.batch_size})")
    json_path = args.out.with_suffix(".json")
    result.to_json(json_path)
    print(result.summary())
    print(f"wrote {args.out} and {json_path}")
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
    except (ValueError, TypeError, OSError, RuntimeError, DivergenceError, DistributedError) as e:
        return fail(f"sgdlab: error: {e}", 1)
    except MemoryError as e:
        return fail(f"sgdlab: error: out of memory{': ' + str(e) if str(e) else ''}; use smaller data or a smaller "
                    "network", 1)
    except KeyboardInterrupt:
        return fail("sgdlab: interrupted", 130)
    except Exception as e:  # under MPI a rank must never leave alone: the others would wait for it forever
        if multi_rank():
            return fail(f"sgdlab: internal error: {type(e).__name__}: {e}", 1)
        raise
