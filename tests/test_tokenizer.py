"""Claims about diffutron.text.tokenizer: byte-level BPE for Turkish with mmBERT special-token ids."""

from __future__ import annotations

import unicodedata
from collections.abc import Iterator

import pytest
from tokenizers import Tokenizer, models
from transformers import AutoTokenizer, PreTrainedTokenizerFast

from diffutron.text.tokenizer import SPECIAL_TOKENS, ensure_special_tokens, train_tokenizer

SENTENCES = [
    "Şüphesiz ki, Türkiye Cumhuriyeti'nin temeli kültürdür.",
    "Iğdır'dan İstanbul'a gidiyoruz; ılık bir öğleden sonraydı.",
    "Yurtta sulh, cihanda sulh.",
    "Ey Türk gençliği! Birinci vazifen, Türk istiklalini, Türk Cumhuriyeti'ni ilelebet muhafaza ve müdafaa etmektir.",
    "Hayatta en hakiki mürşit ilimdir.",
    "Egemenlik kayıtsız şartsız milletindir.",
    "Öğretmenler, yeni nesil sizin eseriniz olacaktır.",
    "Çanakkale'de şehit düşen askerlerimizi saygıyla anıyoruz.",
    "Bugün hava çok güzel; Ankara'da güneş parlıyor, çocuklar bahçede oynuyor.",
    "1923'te kurulan Cumhuriyet, 29 Ekim'de ilan edildi.",
]


def _corpus() -> Iterator[str]:
    # A one-shot generator: training must stream, not need a list.
    for _ in range(30):
        yield from SENTENCES


@pytest.fixture(scope="module")
def tok() -> PreTrainedTokenizerFast:
    return train_tokenizer(
        _corpus(), vocab_size=600, min_frequency=2, model_max_length=256, show_progress=False
    )


def test_special_tokens_have_mmbert_ids(tok: PreTrainedTokenizerFast):
    assert SPECIAL_TOKENS == {"<pad>": 0, "<eos>": 1, "<bos>": 2, "<unk>": 3, "<mask>": 4}
    for token, idx in SPECIAL_TOKENS.items():
        assert tok.convert_tokens_to_ids(token) == idx
    assert (tok.pad_token_id, tok.eos_token_id, tok.bos_token_id, tok.unk_token_id, tok.mask_token_id) == (
        0,
        1,
        2,
        3,
        4,
    )
    assert tok.cls_token == "<bos>" and tok.sep_token == "<eos>"
    assert tok.model_max_length == 256


def test_single_sequence_is_wrapped_in_bos_and_eos(tok: PreTrainedTokenizerFast):
    ids = tok(SENTENCES[0])["input_ids"]
    assert ids[0] == 2 and ids[-1] == 1
    assert 1 not in ids[1:-1] and 2 not in ids[1:-1]
    assert tok(SENTENCES[0], add_special_tokens=False)["input_ids"] == ids[1:-1]


def test_pair_is_bos_a_eos_b_eos(tok: PreTrainedTokenizerFast):
    a = tok("Merhaba.", add_special_tokens=False)["input_ids"]
    b = tok("Nasılsın?", add_special_tokens=False)["input_ids"]
    assert tok("Merhaba.", "Nasılsın?")["input_ids"] == [2, *a, 1, *b, 1]


@pytest.mark.parametrize("text", SENTENCES[:2])
def test_round_trip_is_exact_on_turkish_sentences(tok: PreTrainedTokenizerFast, text: str):
    ids = tok(text)["input_ids"]
    assert tok.decode(ids, skip_special_tokens=True) == text


@pytest.mark.parametrize(
    "text",
    [
        "a , b  c\n\n\td  ",  # spaces before punctuation, runs of whitespace, tabs
        "  Baştaki boşluk ve sondaki satır sonu\n",
        "Емоджи 🙂 ve Кирилица: eğitimde hiç görülmedi",  # bytes never seen in training
        "MİLLÎ EĞİTİM — “tırnaklar” ve ‘kesme’ işaretleri…",
    ],
)
def test_round_trip_is_exact_for_any_nfc_text(tok: PreTrainedTokenizerFast, text: str):
    ids = tok(text, add_special_tokens=False)["input_ids"]
    assert tok.unk_token_id not in ids
    assert tok.decode(ids) == text


def test_decomposed_input_comes_back_composed(tok: PreTrainedTokenizerFast):
    nfd = unicodedata.normalize("NFD", SENTENCES[1])
    assert tok.decode(tok(nfd)["input_ids"], skip_special_tokens=True) == SENTENCES[1]


def test_apostrophe_suffixes_are_not_split_like_english_contractions(tok: PreTrainedTokenizerFast):
    pieces = [p for p, _ in tok.backend_tokenizer.pre_tokenizer.pre_tokenize_str("İstanbul'da 1923'te")]
    # GPT-2's regex would give "'d" + "a" and "'t" + "e".
    assert pieces[1:3] == ["'", "da"]
    assert pieces[-2:] == ["'", "te"]


def test_digits_are_one_token_each_whatever_the_corpus_repeats(tok: PreTrainedTokenizerFast):
    # "1923" is in every training sentence: BPE would make it one token if the digits were not split
    assert tok.tokenize(" 1923") == ["Ġ", "1", "9", "2", "3"]
    # a digit is the same token wherever it stands: the space before a number is a token of its own
    assert [t for t in tok.get_vocab() if t.lstrip("Ġ").isdigit() and len(t) > 1] == []
    text = "29 Ekim 1923'te 3047 kişi"
    assert tok.decode(tok(text, add_special_tokens=False)["input_ids"]) == text


def test_training_learns_turkish_words(tok: PreTrainedTokenizerFast):
    # Frequent whole words become single tokens ("Ġ" marks a leading space in byte-level BPE).
    assert "Ġsulh" in tok.get_vocab()
    assert len(tok(" sulh", add_special_tokens=False)["input_ids"]) == 1


def test_save_and_reload_with_autotokenizer(tok: PreTrainedTokenizerFast, tmp_path):
    tok.save_pretrained(tmp_path)
    loaded = AutoTokenizer.from_pretrained(tmp_path)
    for text in SENTENCES:
        assert loaded(text)["input_ids"] == tok(text)["input_ids"]
        assert loaded.decode(loaded(text)["input_ids"], skip_special_tokens=True) == text
    assert (loaded.pad_token_id, loaded.eos_token_id, loaded.bos_token_id, loaded.mask_token_id) == (
        0,
        1,
        2,
        4,
    )
    assert loaded.model_max_length == 256
    short, long = "Merhaba.", SENTENCES[3]
    batch = loaded([short, long], padding=True)["input_ids"]
    n_short = len(loaded(short)["input_ids"])
    assert len(batch[0]) == len(batch[1]) > n_short
    assert set(batch[0][n_short:]) == {0}  # right-padded with <pad>


def test_vocab_size_below_bytes_plus_specials_is_rejected():
    with pytest.raises(ValueError, match="261"):
        train_tokenizer(SENTENCES, vocab_size=100, show_progress=False)


def _bare_tokenizer(vocab: dict[str, int], **special: str) -> PreTrainedTokenizerFast:
    backend = Tokenizer(models.WordLevel(vocab, unk_token="[UNK]"))
    return PreTrainedTokenizerFast(tokenizer_object=backend, unk_token="[UNK]", **special)


def test_ensure_special_tokens_adds_mask_and_reuses_eos_as_pad():
    t = _bare_tokenizer({"[UNK]": 0, "</s>": 1, "merhaba": 2}, eos_token="</s>")
    n = len(t)
    assert ensure_special_tokens(t) == ["<mask>"]
    assert t.mask_token == "<mask>" and t.mask_token_id == n
    assert t.pad_token == "</s>" and t.pad_token_id == 1
    assert ensure_special_tokens(t) == []  # idempotent: nothing more to add


def test_ensure_special_tokens_adds_pad_when_there_is_no_eos():
    t = _bare_tokenizer({"[UNK]": 0, "merhaba": 1})
    assert ensure_special_tokens(t) == ["<mask>", "<pad>"]
    assert t.pad_token_id is not None and t.mask_token_id is not None
    assert len(t) == 4


def test_ensure_special_tokens_reports_nothing_when_mask_is_already_in_vocab():
    t = _bare_tokenizer({"[UNK]": 0, "<mask>": 1, "</s>": 2}, eos_token="</s>")
    assert ensure_special_tokens(t) == []
    assert t.mask_token_id == 1 and len(t) == 3
