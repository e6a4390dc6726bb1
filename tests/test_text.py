"""Claims about diffutron.text.normalize: NFC, line ends, invisible characters, Turkish casing."""

from __future__ import annotations

import unicodedata

import pytest

from diffutron.text import normalize, turkish_casefold, turkish_lower, turkish_upper

SENTENCE = "Şüphesiz ki, Türkiye Cumhuriyeti'nin temeli kültürdür."


def test_normalize_composes_decomposed_turkish_letters():
    decomposed = unicodedata.normalize("NFD", SENTENCE)
    assert decomposed != SENTENCE
    assert normalize(decomposed) == SENTENCE


def test_normalize_leaves_nfc_text_unchanged_and_is_idempotent():
    text = "Iğdır'dan İstanbul'a gidiyoruz; ılık bir öğleden sonraydı.\n\tMİLLÎ  Mücadele!"
    assert normalize(text) == text
    assert normalize(normalize(text)) == normalize(text)


def test_normalize_unifies_line_ends():
    assert normalize("Ankara\r\nİzmir\rBursa\n") == "Ankara\nİzmir\nBursa\n"


def test_normalize_strips_bom_and_zero_width_characters():
    text = "\ufeffYurtta\u200b sulh,\u200c cihanda\u200d sulh.\ufeff"
    assert normalize(text) == "Yurtta sulh, cihanda sulh."


def test_normalize_keeps_case_and_punctuation():
    assert normalize("ÇOK GÜZEL, değil mi?") == "ÇOK GÜZEL, değil mi?"


def test_zero_width_between_letter_and_accent_does_not_block_composition():
    assert normalize("g\u200b\u0306") == "ğ"


@pytest.mark.parametrize(
    ("upper", "lower"),
    [
        ("İSTANBUL", "istanbul"),
        ("ISPARTA", "ısparta"),
        ("IĞDIR", "ığdır"),
        ("ÇANAKKALE ŞEHİTLERİ", "çanakkale şehitleri"),
        ("MİLLÎ", "millî"),
    ],
)
def test_turkish_lower_maps_dotted_and_dotless_i(upper: str, lower: str):
    assert turkish_lower(upper) == lower


def test_python_lower_gets_dotted_capital_i_wrong_but_turkish_lower_does_not():
    assert "İstanbul".lower() != "istanbul"  # "i̇stanbul": i + combining dot above
    assert turkish_lower("İstanbul") == "istanbul"


@pytest.mark.parametrize(
    ("lower", "upper"),
    [("iğdır", "İĞDIR"), ("istanbul", "İSTANBUL"), ("ısparta", "ISPARTA"), ("millî", "MİLLÎ")],
)
def test_turkish_upper_maps_dotted_and_dotless_i(lower: str, upper: str):
    assert turkish_upper(lower) == upper


def test_turkish_lower_handles_decomposed_dotted_capital_i():
    decomposed = "I\u0307STANBUL"  # "İSTANBUL" in NFD
    assert turkish_lower(decomposed) == "istanbul"
    assert turkish_lower(unicodedata.normalize("NFD", "İzmir")) == "izmir"


def test_turkish_upper_handles_decomposed_i_with_circumflex():
    assert turkish_upper(unicodedata.normalize("NFD", "millî")) == "MİLLÎ"


def test_turkish_case_round_trips_on_a_real_sentence():
    text = "Iğdır'dan İstanbul'a gidiyoruz; ılık bir öğleden sonraydı."
    assert turkish_lower(turkish_upper(text)) == turkish_lower(text)
    assert turkish_upper(text) == "IĞDIR'DAN İSTANBUL'A GİDİYORUZ; ILIK BİR ÖĞLEDEN SONRAYDI."


def test_turkish_casefold_matches_across_case_and_normal_form():
    assert turkish_casefold("İSTANBUL") == turkish_casefold("istanbul")
    assert turkish_casefold("IĞDIR") == turkish_casefold(unicodedata.normalize("NFD", "ığdır"))
    assert turkish_casefold("ISPARTA") != turkish_casefold("isparta")  # different letters in Turkish
