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
