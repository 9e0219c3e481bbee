"""Scores of an explanation, delphi style, each a balanced accuracy ((true-positive rate + true-negative rate) / 2).

* **detection**: the explainer LM sees the explanation and one excerpt at a time, held-out
  activating excerpts and non-activating ones mixed, and says whether the latent is active in it.
* **fuzzing**: it sees excerpts with tokens marked, held-out activating ones marked where the latent
  is active, and non-activating ones with as many tokens marked at random (delphi's default; its
  harder "active" variant marks quiet tokens of activating excerpts instead, which asks which token
  of a topic's passage fires rather than whether the marks fit the explanation), and says whether
  the marks are right.

The same questions asked with another latent's explanation (the *shuffled* baseline) say what a
score is worth: 0.5 is chance, and an explanation is informative as far as it beats its baseline.
A question the LM does not answer with Yes or No counts as answered wrongly. A score needs both kinds
of excerpt: with one kind only, answering always Yes (or always No) would score 1.0, so it is NaN
(not scored) instead, as delphi refuses such a record.
"""

from __future__ import annotations

from collections.abc import Sequence


def balanced_accuracy(truth: Sequence[bool], answers: Sequence[bool | None]) -> float:
    """(TPR + TNR) / 2; an unanswered question (None) is wrong. NaN unless both classes were asked:
    a rate of one class alone is what a constant answer maximises."""
    rates = []
    for cls in (True, False):
        asked = [a for t, a in zip(truth, answers) if t is cls]
        if not asked:
            return float("nan")
        rates.append(sum(a is cls for a in asked) / len(asked))
    return sum(rates) / 2
