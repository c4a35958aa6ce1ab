"""Verdicts: every claim the lab tests is judged by a stated rule applied to its own numbers.

A reading never asserts what the data did not show. Each experiment states its claims as
``Verdict`` objects, decided by code from the measured numbers, and the printed reading, the
JSON file and the HTML report all show the verdict beside the rule and the evidence.

>>> v = decide("variance falls like 1/B", holds=True, rule="slope within 2 SE of -1",
...            evidence="slope -1.004 +- 0.010")
>>> v.verdict
'holds'
>>> decide("x", holds=True, caveat="only for B <= 64", rule="r", evidence="e").verdict
'holds with a caveat'
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

HOLDS, CAVEAT, FAILS = "holds", "holds with a caveat", "does not hold here"
VERDICTS = (HOLDS, CAVEAT, FAILS)


@dataclass(frozen=True)
class Verdict:
    """One claim, its verdict (one of ``VERDICTS``), the rule that decided it, and the numbers."""

    claim: str
    verdict: str
    rule: str
    evidence: str
    caveat: str | None = None

    def __post_init__(self):
        if self.verdict not in VERDICTS:
            raise ValueError(f"unknown verdict {self.verdict!r}; valid: {', '.join(VERDICTS)}")

    @property
    def holds(self) -> bool:
        return self.verdict != FAILS

    def sentence(self) -> str:
        """The claim and its verdict as one sentence, e.g. for a printed reading."""
        s = f"{self.claim}: {self.verdict} ({self.evidence}; rule: {self.rule})"
        return s + (f"; caveat: {self.caveat}." if self.caveat and self.verdict == CAVEAT else ".")

    def to_dict(self) -> dict:
        return asdict(self)


def decide(claim: str, *, holds: bool, rule: str, evidence: str, caveat: str | None = None) -> Verdict:
    """The verdict of ``claim``: does not hold if ``holds`` is false, else holds (with ``caveat`` if given)."""
    verdict = FAILS if not holds else (CAVEAT if caveat else HOLDS)
    return Verdict(claim=claim, verdict=verdict, rule=rule, evidence=evidence, caveat=caveat if holds else None)


def within(measured: float, expected: float, se: float, k: float = 2.0) -> bool:
    """|measured - expected| <= k standard errors (k = 2: about a 95% two-sided band)."""
    return abs(measured - expected) <= k * se


def fewest(samples: dict, who: str, quantity: str, alpha: float = 0.05, claim: str | None = None,
           censored: dict | None = None) -> Verdict:
    """Does ``who`` need the fewest ``quantity``? ``samples`` maps each contender to its values over seeds.

    Rule: holds when ``who`` has the smallest mean and a one-sided Welch t-test on the log values
    rejects "not smaller" at level ``alpha`` against every other contender; holds with a caveat when
    its mean is the smallest but some difference is not significant; does not hold otherwise.
    Missing values (None: the run never got there) count as +inf: such a contender cannot be smallest.
    ``censored`` (name -> count) says how many of a contender's values are only lower bounds (runs
    stopped by the budget, given as the budget); when ``who`` has any, it holds at most with a caveat.

    >>> fewest({"a": [1, 1.1, 0.9], "b": [5, 5.5, 4.5]}, "a", "updates").verdict
    'holds'
    >>> fewest({"a": [1, 1.1, 0.9], "b": [5, 5.5, 4.5]}, "b", "updates").verdict
    'does not hold here'
    """
    import math

    import numpy as np

    from .estimators import welch_less

    def clean(v):
        return [math.inf if x is None or not math.isfinite(x) else float(x) for x in v]

    vals = {k: clean(v) for k, v in samples.items()}
    means = {k: float(np.mean(v)) if v else math.inf for k, v in vals.items()}
    others = [k for k in vals if k != who]
    pvals = {}
    for k in others:
        a, b = vals[who], vals[k]
        if all(map(math.isfinite, a)) and all(map(math.isfinite, b)):
            pvals[k] = welch_less(np.log(np.maximum(a, 1e-300)), np.log(np.maximum(b, 1e-300)))
        else:
            pvals[k] = 0.0 if all(map(math.isfinite, a)) and not all(map(math.isfinite, b)) and means[who] < means[k] \
                else 1.0
    smallest = all(means[who] < means[k] for k in others)
    significant = all(p < alpha for p in pvals.values())
    censored = censored or {}
    evidence = "; ".join(f"{k}: mean {means[k]:.4g}" + (f" (p = {pvals[k]:.2g})" if k in pvals else "")
                         + (f" ({censored[k]} run(s) censored at the budget)" if censored.get(k) else "") for k in vals)
    caveat = None
    if censored.get(who):
        caveat = f"{censored[who]} of its runs never reached the target: their values are lower bounds"
    elif not significant:
        caveat = "its lead is not statistically significant over the seeds"
    rule = f"smallest mean, and a one-sided Welch test on log values at level {alpha} against every other"
    return decide(claim or f"{who} needs the fewest {quantity}", holds=smallest, rule=rule, evidence=evidence,
                  caveat=caveat)
