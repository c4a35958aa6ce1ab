"""sgdlab.lab: measure and show the claims behind batch, stochastic and mini-batch descent.

Each experiment is ``run(data="digits", data_dir=None, *, seed=0, out=None, quick=False) -> LabResult``;
with ``out`` it writes ``out/NAME.png`` and ``out/NAME.json``. ``quick=True`` is a smaller,
faster version for tests and reports.

>>> sorted(EXPERIMENTS)[:3]
['compare', 'minima', 'noise-scale']
"""

from . import compare, minima, noise_scale, parallel, redundancy, symmetry, throughput, unbiased, variance
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
    "parallel": parallel.run,
}


def run(name: str, **kwargs) -> LabResult:
    """Run the experiment called ``name`` (see ``EXPERIMENTS``)."""
    if name not in EXPERIMENTS:
        raise ValueError(f"unknown experiment {name!r}; valid: {', '.join(EXPERIMENTS)}")
    return EXPERIMENTS[name](**kwargs)


__all__ = ["EXPERIMENTS", "LabResult", "run"]
