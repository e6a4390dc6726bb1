"""Metrics with their standard errors: accuracy, F1, exact match / token F1 (SQuAD), ROUGE.

    acc = mean_with_stderr([1.0, 0.0, 1.0])                 # Metric(value, stderr, n)
    f1 = binary_f1(golds, preds)                             # of class 1 ("Evet": ironic / offensive)
    macro_f1(golds, preds, n_classes=5)
    squad_exact(pred, golds), squad_f1(pred, golds)          # max over the reference answers
    rouge(pred, ref)                                         # {"rouge1", "rouge2", "rougeL"} F-measures

Conventions follow lm-eval (which CETVEL runs): ``acc`` picks the choice with the highest
log-likelihood, ``acc_norm`` the highest log-likelihood per character of the choice; the standard
error of a mean is the sample standard deviation over sqrt(n). F1 and macro-F1 are corpus-level, so
their standard error is a seeded bootstrap. Exact match and F1 use the SQuAD normaliser (lower case,
no punctuation, no English articles, single spaces), as the SQuAD metric CETVEL's QA tasks call.

ROUGE is computed here, not with ``rouge_score``: its default tokenizer keeps only ``[a-z0-9]``, so
"güzel" would become "g zel". We lower-case with Turkish rules and split on Unicode word characters;
no stemming. ROUGE-L is the sentence-level LCS F-measure.
"""

from __future__ import annotations

import math
import random
import re
import string
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass

from ..text.normalize import turkish_lower


@dataclass
class Metric:
    value: float
    stderr: float
    n: int

    def to_dict(self) -> dict:
        return asdict(self)


def mean_with_stderr(values: Sequence[float]) -> Metric:
    n = len(values)
    if n == 0:
        return Metric(float("nan"), float("nan"), 0)
    mean = sum(values) / n
    if n < 2:
        return Metric(mean, float("nan"), n)
    var = sum((v - mean) ** 2 for v in values) / (n - 1)
    return Metric(mean, math.sqrt(var / n), n)


def binary_f1(golds: Sequence[int], preds: Sequence[int], positive: int = 1) -> float:
    tp = sum(g == positive and p == positive for g, p in zip(golds, preds, strict=True))
    fp = sum(g != positive and p == positive for g, p in zip(golds, preds, strict=True))
    fn = sum(g == positive and p != positive for g, p in zip(golds, preds, strict=True))
    return 0.0 if tp == 0 else 2 * tp / (2 * tp + fp + fn)


def macro_f1(golds: Sequence[int], preds: Sequence[int], n_classes: int | None = None) -> float:
    """Unweighted mean of per-class F1 over the classes present in golds or preds (scikit-learn's
    default) or over ``range(n_classes)`` when given."""
    classes = range(n_classes) if n_classes is not None else sorted(set(golds) | set(preds))
    scores = [binary_f1(golds, preds, positive=c) for c in classes]
    return sum(scores) / len(scores) if scores else float("nan")


def bootstrap(
    fn: Callable[[list[int], list[int]], float],
    golds: Sequence[int],
    preds: Sequence[int],
    iters: int = 1000,
    seed: int = 0,
) -> Metric:
    """A corpus-level metric with the standard deviation of its value over resampled item sets."""
    golds, preds = list(golds), list(preds)
    n = len(golds)
    if n == 0:
        return Metric(float("nan"), float("nan"), 0)
    value = fn(golds, preds)
    rng = random.Random(seed)
    samples = []
    for _ in range(iters if n > 1 else 0):
        idx = [rng.randrange(n) for _ in range(n)]
        samples.append(fn([golds[i] for i in idx], [preds[i] for i in idx]))
    if len(samples) < 2:
        return Metric(value, float("nan"), n)
    mean = sum(samples) / len(samples)
    return Metric(value, math.sqrt(sum((s - mean) ** 2 for s in samples) / (len(samples) - 1)), n)


def argmax(values: Sequence[float]) -> int:
    """Index of the largest value; the first one on ties (as numpy.argmax)."""
    return max(range(len(values)), key=lambda i: (values[i], -i))


# --- SQuAD exact match and F1 ------------------------------------------------------------------

_ARTICLES = re.compile(r"\b(a|an|the)\b", re.UNICODE)
_PUNCT = set(string.punctuation)


def squad_normalize(s: str) -> str:
    """The official SQuAD v1.1 normaliser (kept as is, for comparable numbers)."""
    s = s.lower()
    s = "".join(ch for ch in s if ch not in _PUNCT)
    s = _ARTICLES.sub(" ", s)
    return " ".join(s.split())


def _token_f1(pred: str, gold: str) -> float:
    p, g = squad_normalize(pred).split(), squad_normalize(gold).split()
    common = Counter(p) & Counter(g)
    same = sum(common.values())
    if not p or not g:
        return float(p == g)
    if same == 0:
        return 0.0
    precision, recall = same / len(p), same / len(g)
    return 2 * precision * recall / (precision + recall)


def squad_exact(pred: str, golds: Sequence[str]) -> float:
    return max(float(squad_normalize(pred) == squad_normalize(g)) for g in golds)


def squad_f1(pred: str, golds: Sequence[str]) -> float:
    return max(_token_f1(pred, g) for g in golds)


# --- ROUGE -------------------------------------------------------------------------------------

_WORD = re.compile(r"\w+", re.UNICODE)


def rouge_tokens(s: str) -> list[str]:
    return _WORD.findall(turkish_lower(s))


def _f(overlap: int, n_pred: int, n_ref: int) -> float:
    if overlap == 0 or n_pred == 0 or n_ref == 0:
        return 0.0
    p, r = overlap / n_pred, overlap / n_ref
    return 2 * p * r / (p + r)


def _ngrams(tokens: list[str], n: int) -> Counter:
    return Counter(tuple(tokens[i : i + n]) for i in range(len(tokens) - n + 1))


def _lcs(a: list[str], b: list[str]) -> int:
    prev = [0] * (len(b) + 1)
    for x in a:
        cur = [0]
        for j, y in enumerate(b, start=1):
            cur.append(prev[j - 1] + 1 if x == y else max(prev[j], cur[j - 1]))
        prev = cur
    return prev[-1]


def rouge(pred: str, ref: str) -> dict[str, float]:
    p, r = rouge_tokens(pred), rouge_tokens(ref)
    out = {}
    for n in (1, 2):
        pn, rn = _ngrams(p, n), _ngrams(r, n)
        out[f"rouge{n}"] = _f(sum((pn & rn).values()), sum(pn.values()), sum(rn.values()))
    out["rougeL"] = _f(_lcs(p, r), len(p), len(r))
    return out
