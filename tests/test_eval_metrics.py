"""Metrics against values computed by hand."""

import math

import pytest

from diffutron.evaluation.metrics import (
    argmax,
    binary_f1,
    bootstrap,
    macro_f1,
    mean_with_stderr,
    rouge,
    rouge_tokens,
    squad_exact,
    squad_f1,
)
from diffutron.evaluation.runner import cut_at


def test_accuracy_and_its_standard_error_by_hand():
    m = mean_with_stderr([1.0, 0.0, 1.0, 1.0])
    # mean 0.75; sample variance (3 * 0.25^2 + 0.75^2) / 3 = 0.25; stderr sqrt(0.25 / 4) = 0.25
    assert (m.value, m.stderr, m.n) == (0.75, pytest.approx(0.25), 4)
    assert math.isnan(mean_with_stderr([1.0]).stderr) and mean_with_stderr([]).n == 0


def test_binary_f1_of_the_positive_class_by_hand():
    # tp = 2, fp = 1, fn = 1 -> 2*2 / (2*2 + 1 + 1) = 2/3
    assert binary_f1([1, 1, 0, 0, 1], [1, 0, 1, 0, 1]) == pytest.approx(2 / 3)
    assert binary_f1([0, 0], [0, 0]) == 0.0  # no positive class at all: 0, as scikit-learn


def test_macro_f1_is_the_unweighted_mean_of_per_class_f1():
    golds, preds = [0, 0, 1, 1, 2, 2], [0, 1, 1, 1, 2, 0]
    # class 0: tp 1 fp 1 fn 1 -> 0.5; class 1: tp 2 fp 1 fn 0 -> 0.8; class 2: tp 1 fp 0 fn 1 -> 2/3
    assert macro_f1(golds, preds) == pytest.approx((0.5 + 0.8 + 2 / 3) / 3)
    assert macro_f1(golds, preds, n_classes=4) == pytest.approx((0.5 + 0.8 + 2 / 3 + 0.0) / 4)


def test_bootstrap_keeps_the_exact_value_and_gives_a_positive_seeded_stderr():
    golds, preds = [1, 0, 1, 1, 0, 1, 0, 0] * 5, [1, 0, 0, 1, 1, 1, 0, 0] * 5
    a = bootstrap(binary_f1, golds, preds, iters=200, seed=0)
    b = bootstrap(binary_f1, golds, preds, iters=200, seed=0)
    assert a.value == binary_f1(golds, preds) and a.stderr > 0 and a == b and a.n == 40


def test_squad_exact_match_and_f1_by_hand():
    assert squad_exact("the Van Gölü", ["Van Gölü"]) == 1.0  # articles and case removed
    assert squad_exact("Van Gölü'dür.", ["Van Gölü"]) == 0.0
    # tokens: [van, gölüdür] vs [van, gölü]: one in common -> P = R = 1/2 -> F1 = 1/2
    assert squad_f1("Van Gölü'dür.", ["Van Gölü"]) == pytest.approx(0.5)
    assert squad_f1("Edirne", ["Edirne'de", "Edirne"]) == 1.0  # the best reference counts


def test_rouge_by_hand_with_turkish_letters_kept():
    pred, ref = "KÖPRÜ trafiğe açıldı", "Şehrin iki yakasını bağlayan köprü trafiğe açıldı."
    r = rouge(pred, ref)
    # unigrams: 3 of 3 predicted, 3 of 7 reference -> F = 2 * 1 * 3/7 / (1 + 3/7) = 0.6
    # bigrams: 2 of 2, 2 of 6 -> 0.5; LCS 3 -> 0.6
    assert r == pytest.approx({"rouge1": 0.6, "rouge2": 0.5, "rougeL": 0.6})
    assert rouge_tokens("IĞDIR'da güzel") == ["ığdır", "da", "güzel"]  # Turkish casing, no "g zel"


def test_argmax_takes_the_first_of_equal_scores():
    assert argmax([-1.0, -0.5, -0.5]) == 1


def test_generated_answers_are_cut_at_the_first_stop_string():
    assert cut_at(" Edirne'de.\nSoru: başka", ("\n",)) == " Edirne'de."
    assert cut_at("özet bir\n\niki", ("\n\n", "###")) == "özet bir"
