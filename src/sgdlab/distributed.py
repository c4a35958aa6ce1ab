"""Training one model on several processes with MPI: the world, its reductions, its agreement checks.

``fit(net, X, Y, comm=World(MPI.COMM_WORLD))`` (or ``comm=MPI.COMM_WORLD``; the command line does it
by itself under ``mpiexec -n P sgdlab train ...``) trains ONE model with P ranks that make the same
updates as one process:

* every rank draws the same global sampling order from the same seeded stream (rank 0's);
* mini-batch (m >= P): each global batch of m rows is split into P slices; every rank computes the
  gradient SUM over its slice, the sums are combined, and every rank divides by m and applies the
  same update, so the parameters never drift apart (a digest is compared at every epoch end);
* batch GD: each rank takes 1/P of the n rows (the data-parallel full gradient);
* stochastic (m = 1) cannot be split; it becomes **local SGD**, a different algorithm: each rank
  makes plain SGD steps on its own share of every epoch's order and the ranks average their
  parameters every ``sync_every`` = K updates and at every epoch end (Zinkevich et al. 2010,
  Stich 2019). With P = 1 it is plain SGD, bit for bit.

Two reductions combine the sums:

``"allreduce"`` (default): one MPI_Allreduce of every rank's slice sum. Deterministic for a fixed P,
    and equal to the one-process gradient up to float rounding (the summation order depends on P).
``"exact"``: each batch is cut into ``shards`` micro-shards (default 12, i.e. min(12, m) parts of
    m rows with bounds floor(j m / G)), which depend on m only, never on P. Each rank computes the
    sums of the micro-shards it owns, an MPI_Allgatherv collects all of them, and every rank adds
    them in micro-shard order 0, 1, ..., G-1. Every floating-point operation is then the same for
    any P, so P = 1, 2, 3, 4, ... give bit-identical parameters (and ``World()`` with no MPI at all
    computes the same numbers in one process). It sends G/P times more bytes than the allreduce.

Example (one process, no MPI needed; the same code runs under ``mpiexec -n 3``):

>>> import numpy as np, sgdlab
>>> from sgdlab.distributed import World
>>> X = np.random.default_rng(0).normal(size=(60, 4)); y = (X[:, 0] > 0).astype(int)
>>> net = sgdlab.Network([4, 5, 2], seed=0)
>>> h = sgdlab.fit(net, X, y, batch_size=12, epochs=2, seed=0, comm=World(reduction="exact"))
>>> h.config["distributed"]["ranks"], h.config["distributed"]["reduction"]
(1, 'exact')
"""

from __future__ import annotations

import contextlib
import hashlib
import os

import numpy as np

REDUCTIONS = ("allreduce", "exact")
SHARDS = 12  # micro-shards per batch in exact mode: divisible by 1, 2, 3, 4 and 6 ranks
INSTALL_HINT = 'pip install ".[mpi]"'
# environment variables through which launchers announce the number of processes of a job
_RANK_VARIABLES = ("PMI_RANK", "OMPI_COMM_WORLD_RANK", "PMIX_RANK", "SLURM_PROCID")
_SIZE_VARIABLES = ("PMI_SIZE", "OMPI_COMM_WORLD_SIZE", "MV2_COMM_WORLD_SIZE", "PMIX_SIZE", "SLURM_STEP_NUM_TASKS")


class DistributedError(RuntimeError):
    """The ranks of an MPI job disagree (data, settings, parameters) or MPI is unavailable."""


def require_mpi():
    """mpi4py's ``MPI`` module, or a DistributedError saying how to install it."""
    try:
        from mpi4py import MPI
    except ImportError:
        raise DistributedError(
            f"training on several processes needs mpi4py and an MPI library: {INSTALL_HINT} "
            "(mpi4py and the MPICH wheels)"
        ) from None
    return MPI


def _launcher_number(names, outside: int) -> int:
    """The first of the launcher's environment variables ``names`` that holds a number, else ``outside``."""
    for name in names:
        value = os.environ.get(name)
        if value and value.isdigit():
            return int(value)
    return outside


def launched_size() -> int:
    """How many processes the launcher (mpiexec, srun) started for this job; 1 outside a launcher."""
    return _launcher_number(_SIZE_VARIABLES, 1)


def launched_rank() -> int:
    """This process's rank as the launcher (mpiexec, srun) numbered it; 0 outside a launcher."""
    return _launcher_number(_RANK_VARIABLES, 0)


def check_reduction(reduction: str) -> str:
    if reduction not in REDUCTIONS:
        raise ValueError(f"unknown reduction {reduction!r}; valid: {', '.join(REDUCTIONS)}")
    return reduction


class World:
    """The processes that train one model, and how they combine gradient sums.

    Parameters
    ----------
    comm : an mpi4py communicator, or None for a one-process world (no MPI needed).
    reduction : "allreduce" (fast; equal to one process up to rounding) or "exact" (bit-identical
        for every number of ranks); see the module docstring.
    sync_every : K >= 1, the updates between two parameter averagings of local SGD (m = 1).
    shards : micro-shards per batch in exact mode (the same value must be used to compare runs).
    """

    def __init__(self, comm=None, *, reduction: str = "allreduce", sync_every: int = 1, shards: int = SHARDS):
        from .validation import check_int

        self.comm = comm
        self.rank = 0 if comm is None else comm.Get_rank()
        self.size = 1 if comm is None else comm.Get_size()
        self.reduction = check_reduction(reduction)
        self.sync_every = check_int(sync_every, "sync_every", 1)
        self.shards = check_int(shards, "shards", 1)
        self.stop_requested = False  # set on this rank (e.g. by a signal handler)
        self.stop_agreed = False  # set on every rank once any rank's request has been combined
        self._local_size = None

    @classmethod
    def from_environment(cls, **options) -> World:
        """COMM_WORLD when a launcher started several processes (mpi4py then required), else one process."""
        if launched_size() <= 1:
            return cls(None, **options)
        return cls(require_mpi().COMM_WORLD, **options)

    @property
    def is_root(self) -> bool:
        return self.rank == 0

    def describe(self) -> dict:
        return {"ranks": self.size, "reduction": self.reduction, "sync_every": self.sync_every, "shards": self.shards}

    def __repr__(self) -> str:
        return f"World(rank {self.rank} of {self.size}, reduction={self.reduction!r})"

    # ----------------------------------------------------------------- who does which rows
    def share(self, n: int, rank: int | None = None) -> tuple[int, int]:
        """Rows [lo, hi) of n that ``rank`` (default: this one) takes: floor(r n / P) .. floor((r+1) n / P)."""
        r = self.rank if rank is None else rank
        return r * n // self.size, (r + 1) * n // self.size

    # ----------------------------------------------------------------- collectives
    def allreduce(self, buf: np.ndarray) -> np.ndarray:
        """Elementwise sum of ``buf`` over the ranks, in place (deterministic for a fixed P)."""
        if self.comm is not None and self.size > 1:
            from mpi4py import MPI

            self.comm.Allreduce(MPI.IN_PLACE, buf, op=MPI.SUM)
        return buf

    def allgather_flat(self, mine: np.ndarray, counts: list[int]) -> np.ndarray:
        """Every rank's 1-D ``mine`` (rank r sends ``counts[r]`` elements), concatenated in rank order."""
        if self.comm is None or self.size == 1:
            return mine
        out = np.empty(sum(counts), mine.dtype)
        self.comm.Allgatherv(np.ascontiguousarray(mine), [out, counts])
        return out

    def bcast(self, obj):
        """Rank 0's ``obj`` on every rank."""
        return obj if self.comm is None or self.size == 1 else self.comm.bcast(obj, root=0)

    def agree(self, what: str, value: str) -> None:
        """Raise DistributedError on every rank unless all ranks hold the same ``value`` of ``what``."""
        if self.comm is None or self.size == 1:
            return
        values = self.comm.allgather(value)
        bad = [r for r, v in enumerate(values) if v != values[0]]
        if bad:
            raise DistributedError(
                f"the ranks differ in {what}: rank {bad[0]} has {_short(values[bad[0]])}, rank 0 "
                f"has {_short(values[0])}; every rank must run the same sgdlab on the same data "
                "with the same settings"
            )

    def check_parameters(self, net, where: str) -> None:
        """Refuse to go on if the ranks' parameters are not bit-identical (a digest is compared)."""
        self.agree(f"their parameters {where} (SHA-256 of the weights)", parameter_digest(net))

    def abort(self, code: int = 1) -> None:
        """End every rank of the job at once (after one rank failed on its own)."""
        if self.comm is not None and self.size > 1:
            self.comm.Abort(code)

    # ----------------------------------------------------------------- threads
    def local_size(self) -> int:
        """Ranks on this node (that share its cores); asked once (a collective), then remembered."""
        if self.comm is None or self.size == 1:
            return 1
        if self._local_size is None:
            from mpi4py import MPI

            node = self.comm.Split_type(MPI.COMM_TYPE_SHARED)
            try:
                self._local_size = node.Get_size()
            finally:
                node.Free()
        return self._local_size

    @contextlib.contextmanager
    def blas_threads(self):
        """Limit each rank's BLAS to its fair share of the node's cores while training."""
        if self.size == 1:
            yield
            return
        from threadpoolctl import threadpool_limits

        try:
            cores = len(os.sched_getaffinity(0))
        except AttributeError:
            cores = os.cpu_count() or 1
        with threadpool_limits(limits=max(1, cores // self.local_size()), user_api="blas"):
            yield


def as_world(comm) -> World:
    """A World from a World (as it is) or an mpi4py communicator (fast allreduce, K = 1)."""
    if isinstance(comm, World):
        return comm
    if not all(hasattr(comm, a) for a in ("Get_rank", "Get_size", "Allreduce")):
        raise TypeError(f"comm must be an mpi4py communicator or a sgdlab.distributed.World; got {type(comm).__name__}")
    return World(comm)


def parameter_digest(net) -> str:
    """SHA-256 of the network's parameters (dtype, shape and bytes of every array, in order)."""
    h = hashlib.sha256()
    for W, b in net.numpy_params():
        for a in (W, b):
            a = np.ascontiguousarray(a)
            h.update(f"{a.dtype.str}{a.shape}".encode())
            h.update(a.tobytes())
    return h.hexdigest()


def data_digest(X, T) -> str:
    """SHA-256 of the training data as this rank sees it: all of it in memory; for data on disk its shape,
    dtype, the targets and 256 rows spread evenly over it (reading every row would defeat the purpose)."""
    from .validation import is_out_of_core

    h = hashlib.sha256()
    T = np.asarray(T)
    h.update(f"{X.shape}{X.dtype}{T.shape}{T.dtype}".encode())
    h.update(np.ascontiguousarray(T).tobytes())
    if is_out_of_core(X):
        rows = np.unique(np.linspace(0, X.shape[0] - 1, num=min(256, X.shape[0])).astype(np.int64))
        h.update(np.ascontiguousarray(X.take(rows, axis=0)).tobytes())
    else:
        h.update(np.ascontiguousarray(np.asarray(X)).tobytes())
    return h.hexdigest()


def _short(v: str) -> str:
    return repr(v if len(v) <= 60 else v[:24] + "...")


# ----------------------------------------------------------------- the command line's side
_ACTIVE: World | None = None  # the multi-rank world of this process's command, for error handling
FAIL_GRACE_SECONDS = 2.0  # a rank that fails alone waits this long for rank 0 to report a shared error
FORWARD_SECONDS = 0.3  # after printing, before aborting: time for the launcher to forward the line


def command_world(reduction: str | None, sync_every: int | None) -> World | None:
    """The World of ``sgdlab train``: several ranks under a launcher; one rank only when asked for
    (``--reduction exact`` or ``--sync-every``); else None (one process, as without MPI)."""
    global _ACTIVE
    if launched_size() <= 1 and reduction is None and sync_every is None:
        return None
    world = World.from_environment(reduction=reduction or "allreduce", sync_every=sync_every or 1)
    if world.size > 1:
        _ACTIVE = world
    return world


def fail(message: str, code: int) -> int:
    """Report an error as one line and end the job: in one process, print and return ``code``; under
    MPI, rank 0 prints and aborts every rank at once; another rank first gives rank 0 a moment (the
    same error usually happens on every rank), then prints its line, naming itself, and aborts."""
    import sys
    import time

    world = _ACTIVE
    if world is None or world.size == 1:
        print(message, file=sys.stderr, flush=True)
        return code
    if not world.is_root:
        time.sleep(FAIL_GRACE_SECONDS)
        message = f"{message} (rank {world.rank} of {world.size})"
    print(message, file=sys.stderr, flush=True)
    sys.stdout.flush()
    # the launcher forwards a rank's output asynchronously and drops what it has not forwarded when the
    # job is torn down: give it a moment (seen: the line lost once in a loaded CI run)
    time.sleep(FORWARD_SECONDS)
    world.abort(code)
    return code


def signal_stop(world: World):
    """A ``SignalStop`` for every rank: a SIGINT/SIGTERM on any rank is combined with the next reduction,
    so that all ranks stop after the same update."""
    import signal

    from .callbacks import SignalStop
    from .train import StopTraining

    class RankSignalStop(SignalStop):
        def _handle(self, signum, frame):
            self.signum = signum
            world.stop_requested = True

        def on_update_end(self, r):
            if world.stop_agreed:
                if self.signum is None:  # another rank got the signal
                    self.signum = signal.SIGTERM
                raise StopTraining

    return RankSignalStop()


def multi_rank() -> bool:
    """Whether this process's command runs with other ranks (see ``command_world``)."""
    return _ACTIVE is not None
