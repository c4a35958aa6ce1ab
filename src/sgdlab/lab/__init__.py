"""sgdlab.lab: measure and show the claims behind batch, stochastic and mini-batch descent.

Each experiment is ``run(data="digits", data_dir=None, *, seed=0, out=None, quick=False) -> LabResult``;
with ``out`` it writes ``out/NAME.png`` and ``out/NAME.json``. ``quick=True`` is a smaller,
faster version for tests and reports.

>>> sorted(EXPERIMENTS)[:3]
['compare', 'frontier', 'gradient-norms']
"""

# the literature (issue 10 part B): frontier, gradient_norms, lr_batch, sharpness
from . import (
    compare,
    frontier,
    gradient_norms,
    lr_batch,
    minima,
    noise_scale,
    parallel,
    redundancy,
    sharpness,
    symmetry,
    throughput,
    unbiased,
    variance,
)
from .result import LabResult

EXPERIMENTS = {
    "unbiased": unbiased.run,
    "variance": variance.run,
    "noise-scale": noise_scale.run,
    "compare": compare.run,
    "redundancy": redundancy.run,
    "minima": minima.run,
    "symmetry": symmetry.run,
    "throughput": throughput.run,
    "frontier": frontier.run,
    "lr-batch": lr_batch.run,
    "sharpness": sharpness.run,
    "gradient-norms": gradient_norms.run,
    "parallel": parallel.run,
}


def run(name: str, **kwargs) -> LabResult:
    """Run the experiment called ``name`` (see ``EXPERIMENTS``), recording the machine and its load.

    The result's ``machine`` is ``sgdlab.machine.describe()`` with the load averages before and after
    the run, and ``quick`` the setting it ran at; its JSON (if written) is rewritten with both.
    """
    from ..machine import describe, recording_load

    if name not in EXPERIMENTS:
        raise ValueError(f"unknown experiment {name!r}; valid: {', '.join(EXPERIMENTS)}")
    import time

    load: dict = {}
    with recording_load(load):
        t0, c0 = time.perf_counter(), time.process_time()
        result = EXPERIMENTS[name](**kwargs)
        load["elapsed_seconds"] = round(time.perf_counter() - t0, 2)
        load["cpu_seconds"] = round(
            time.process_time() - c0, 2
        )  # this process's CPU time: wall time on a quiet machine
    result.machine = {**describe(), **load}
    result.quick = bool(kwargs.get("quick", False))
    if result.json is not None:
        result.write_json(result.json.parent)
    return result


__all__ = ["EXPERIMENTS", "LabResult", "run"]
