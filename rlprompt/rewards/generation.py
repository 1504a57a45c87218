"""Generation metrics: functions of generated texts and their references (several per example).

Every metric takes ``predictions`` (one string per example) and ``references`` (a list of
accepted strings per example) and returns one number for the set, in [0, 1] except BLEU and
chrF, which keep sacrebleu's 0-100 scale:

* ``exact_match`` / ``f1`` - SQuAD v1.1's official definitions: answers normalised (lower
  case, punctuation and the articles a/an/the removed, whitespace collapsed), F1 over tokens,
  the best reference counted per example, averaged over examples;
* ``rouge1`` / ``rouge2`` / ``rougeL`` - F-measure from the ``rouge-score`` package (Porter
  stemming), the best reference per example, averaged;
* ``bleu`` / ``chrf`` - corpus BLEU and chrF from ``sacrebleu``, all references used.

Used as evaluation metrics on greedy generations and, at the cost of generating, as training
rewards (``reward.name: f1`` ...).
"""

from __future__ import annotations

import re
import string
from collections import Counter
from collections.abc import Callable, Sequence
from functools import cache

GenerationMetric = Callable[[Sequence[str], Sequence[Sequence[str]]], float]

_ARTICLES = re.compile(r"\b(a|an|the)\b")
_PUNCTUATION = set(string.punctuation)


def normalize_answer(text: str) -> str:
    """SQuAD's answer normalisation: lower case, no punctuation, no articles, single spaces."""
    text = "".join(ch for ch in text.lower() if ch not in _PUNCTUATION)
    return " ".join(_ARTICLES.sub(" ", text).split())


def _exact(prediction: str, reference: str) -> float:
    return float(normalize_answer(prediction) == normalize_answer(reference))


def _f1(prediction: str, reference: str) -> float:
    predicted, gold = normalize_answer(prediction).split(), normalize_answer(reference).split()
    common = sum((Counter(predicted) & Counter(gold)).values())
    if common == 0:
        return 0.0
    precision, recall = common / len(predicted), common / len(gold)
    return 2 * precision * recall / (precision + recall)


def _best_over_references(score: Callable[[str, str], float]) -> GenerationMetric:
    def metric(predictions: Sequence[str], references: Sequence[Sequence[str]]) -> float:
        _check(predictions, references)
        return sum(max(score(p, r) for r in refs) for p, refs in zip(predictions, references, strict=True)) / len(
            predictions
        )

    return metric


def _check(predictions: Sequence[str], references: Sequence[Sequence[str]]) -> None:
    from rlprompt.errors import RewardError

    if len(predictions) != len(references) or not predictions:
        raise RewardError(f"{len(predictions)} predictions for {len(references)} reference sets")
    if any(not refs for refs in references):
        raise RewardError("every example needs at least one reference")


exact_match = _best_over_references(_exact)
exact_match.__doc__ = "SQuAD exact match: the share of predictions equal to a reference after normalisation."
f1 = _best_over_references(_f1)
f1.__doc__ = "SQuAD token F1, the best reference per example, averaged over examples."


@cache
def _rouge_scorer() -> object:
    from rouge_score import rouge_scorer

    return rouge_scorer.RougeScorer(["rouge1", "rouge2", "rougeL"], use_stemmer=True)


def _rouge(kind: str) -> GenerationMetric:
    def metric(predictions: Sequence[str], references: Sequence[Sequence[str]]) -> float:
        _check(predictions, references)
        scorer = _rouge_scorer()
        total = 0.0
        for prediction, refs in zip(predictions, references, strict=True):
            total += max(scorer.score(r, prediction)[kind].fmeasure for r in refs)  # type: ignore[attr-defined]
        return total / len(predictions)

    metric.__name__ = metric.__qualname__ = kind
    metric.__doc__ = f"{kind} F-measure (rouge-score, stemmed), the best reference per example, averaged."
    return metric


rouge1, rouge2, rougeL = _rouge("rouge1"), _rouge("rouge2"), _rouge("rougeL")  # noqa: N816 - the metrics' names


def _transpose(references: Sequence[Sequence[str]]) -> list[list[str]]:
    """sacrebleu wants one stream per reference position; examples with fewer references repeat their last."""
    width = max(len(refs) for refs in references)
    return [[refs[min(i, len(refs) - 1)] for refs in references] for i in range(width)]


def bleu(predictions: Sequence[str], references: Sequence[Sequence[str]]) -> float:
    """Corpus BLEU (sacrebleu, 0-100) against all references."""
    import sacrebleu

    _check(predictions, references)
    return float(sacrebleu.corpus_bleu(list(predictions), _transpose(references)).score)


def chrf(predictions: Sequence[str], references: Sequence[Sequence[str]]) -> float:
    """Corpus chrF (sacrebleu, 0-100) against all references."""
    import sacrebleu

    _check(predictions, references)
    return float(sacrebleu.corpus_chrf(list(predictions), _transpose(references)).score)
