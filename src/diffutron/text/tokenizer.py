"""Byte-level BPE tokenizer for Turkish masked diffusion models.

What it is: a trainer for a fresh byte-level BPE tokenizer (``tokenizers`` library) wrapped as a
``transformers.PreTrainedTokenizerFast``, and a helper that gives a tokenizer loaded from
elsewhere the ``<mask>`` / pad tokens a masked diffusion model needs.

How to use it::

    from diffutron.data import iter_documents, DataReport
    from diffutron.text.tokenizer import train_tokenizer

    report = DataReport()
    tok = train_tokenizer(iter_documents("embedded", report), vocab_size=16000)
    tok.save_pretrained("out/tokenizer")          # reload with AutoTokenizer.from_pretrained
    ids = tok("Iğdır'dan İstanbul'a gidiyoruz.")["input_ids"]   # <bos> ... <eos>
    tok.decode(ids, skip_special_tokens=True)      # the exact input back

The special tokens sit at the ids mmBERT / Gemma use (``<pad>``=0, ``<eos>``=1, ``<bos>``=2,
``<unk>``=3, ``<mask>``=4), so configs and masking code can rely on the same ids either way.
Every byte is in the base vocabulary, so nothing maps to ``<unk>`` and ``decode(encode(x)) == x``
for any NFC text (the tokenizer applies NFC itself; non-NFC input comes back composed).

Pre-tokenisation deviates from GPT-2 on purpose: GPT-2's regex splits off English contractions
(``'s``, ``'d``, ``'t``, ...), which cuts Turkish suffixes after an apostrophe in arbitrary places
(``İstanbul'da`` → ``'d`` + ``a``, ``1923'te`` → ``'t`` + ``e``). We split on the same letter /
number / punctuation / whitespace classes without the contraction rule, so the apostrophe stands
alone and the whole suffix is left to BPE. Digits are split one by one, as in Gemma's (mmBERT's)
vocabulary: BPE would otherwise merge whatever digit pairs the corpus happens to repeat (``347`` →
``3`` + ``47``, ``999`` → ``99`` + ``9``), and a number's place values would be spelled differently
from one number to the next. The space before a number is a token of its own (Gemma writes ``▁`` then
``7``), so a digit is one token wherever it stands: with `` 7`` and ``7`` apart, a number's first digit
would be learned apart from all the others.

What it does not know: anything about morphology (BPE merges are purely statistical) and which
corpus it was trained on. :func:`train_tokenizer` does not normalise beyond NFC: pass text through
:func:`diffutron.text.normalize` (the data readers already do) to drop BOMs and zero-width marks.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from tokenizers import Regex, Tokenizer, decoders, models, normalizers, pre_tokenizers, processors, trainers
from transformers import PreTrainedTokenizerFast

__all__ = [
    "BOS_TOKEN",
    "EOS_TOKEN",
    "MASK_TOKEN",
    "PAD_TOKEN",
    "SPECIAL_TOKENS",
    "UNK_TOKEN",
    "ensure_special_tokens",
    "train_tokenizer",
]

PAD_TOKEN = "<pad>"
EOS_TOKEN = "<eos>"
BOS_TOKEN = "<bos>"
UNK_TOKEN = "<unk>"
MASK_TOKEN = "<mask>"

#: token → id, in id order. The trainer assigns ids in list order, which is how they land here.
SPECIAL_TOKENS: dict[str, int] = {PAD_TOKEN: 0, EOS_TOKEN: 1, BOS_TOKEN: 2, UNK_TOKEN: 3, MASK_TOKEN: 4}

# GPT-2's pre-tokenisation classes without its English contraction alternatives, one digit at a time
# and no space glued to a digit (see module doc). \p{M} is kept with letters so a decomposed accent is
# never split from its base letter.
_SPLIT_PATTERN = r" ?[\p{L}\p{M}]+|\p{N}| ?[^\s\p{L}\p{M}\p{N}]+|\s+(?!\S)|\s+"

_N_BYTES = 256


def _build_backend() -> Tokenizer:
    tok = Tokenizer(models.BPE(unk_token=UNK_TOKEN))
    tok.normalizer = normalizers.NFC()
    tok.pre_tokenizer = pre_tokenizers.Sequence(
        [
            pre_tokenizers.Split(Regex(_SPLIT_PATTERN), behavior="isolated"),
            # use_regex=False: the split above already did the work; this step only maps bytes.
            pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False),
        ]
    )
    tok.decoder = decoders.ByteLevel()
    return tok


def _add_post_processor(tok: Tokenizer) -> None:
    bos, eos = BOS_TOKEN, EOS_TOKEN
    tok.post_processor = processors.TemplateProcessing(
        single=f"{bos} $A {eos}",
        pair=f"{bos} $A {eos} $B:1 {eos}:1",
        special_tokens=[(bos, SPECIAL_TOKENS[bos]), (eos, SPECIAL_TOKENS[eos])],
    )


def train_tokenizer(
    texts: Iterable[str],
    vocab_size: int = 16000,
    min_frequency: int = 2,
    model_max_length: int = 512,
    *,
    show_progress: bool = True,
) -> PreTrainedTokenizerFast:
    """Train a byte-level BPE tokenizer on ``texts`` and wrap it for ``transformers``.

    ``texts`` is consumed once, as a stream (``train_from_iterator``): a generator over a large
    corpus is fine and nothing is collected into a list here. ``vocab_size`` counts the 5 special
    tokens and the 256 byte symbols, so it must be at least 261; a small corpus may end with fewer
    tokens than asked for when no pair reaches ``min_frequency``.
    """
    min_vocab = len(SPECIAL_TOKENS) + _N_BYTES
    if vocab_size < min_vocab:
        raise ValueError(
            f"vocab_size must be at least {min_vocab} (5 special tokens + 256 bytes), got {vocab_size}"
        )
    if model_max_length < 2:
        raise ValueError(f"model_max_length must leave room for <bos> and <eos>, got {model_max_length}")

    backend = _build_backend()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        min_frequency=min_frequency,
        special_tokens=list(SPECIAL_TOKENS),
        # All 256 bytes up front: without them a byte unseen in training (a rare emoji, a stray
        # Cyrillic letter) would have no token at all and the round trip would break.
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=show_progress,
    )
    backend.train_from_iterator(texts, trainer=trainer)
    for token, expected in SPECIAL_TOKENS.items():
        got = backend.token_to_id(token)
        if got != expected:  # would silently break every config that assumes mmBERT's ids
            raise RuntimeError(f"special token {token!r} got id {got}, expected {expected}")
    # Added after training so the trainer's own encoding of the corpus carries no <bos>/<eos>.
    _add_post_processor(backend)

    return PreTrainedTokenizerFast(
        tokenizer_object=backend,
        pad_token=PAD_TOKEN,
        eos_token=EOS_TOKEN,
        bos_token=BOS_TOKEN,
        unk_token=UNK_TOKEN,
        mask_token=MASK_TOKEN,
        # BERT-style code (and some collators) look for cls/sep; they are the same tokens here.
        cls_token=BOS_TOKEN,
        sep_token=EOS_TOKEN,
        model_max_length=model_max_length,
        padding_side="right",
        # transformers < 5 defaulted this to True, which deletes spaces before punctuation on
        # decode ("a , b" -> "a, b") and breaks the exact round trip.
        clean_up_tokenization_spaces=False,
    )


def ensure_special_tokens(tokenizer: Any) -> list[str]:
    """Give ``tokenizer`` a mask token and a pad token if it lacks them; return the tokens added.

    * mask: ``<mask>`` is added (or, if already in the vocabulary, just designated) when
      ``tokenizer.mask_token`` is unset.
    * pad: falls back to the eos token when there is one (no new embedding needed), otherwise
      ``<pad>`` is added.

    The returned list holds only tokens that grew the vocabulary; when it is non-empty the caller
    must ``model.resize_token_embeddings(len(tokenizer))``. Works with any ``transformers``
    tokenizer (slow or fast); the tokenizer is modified in place.
    """
    added: list[str] = []

    def _set(attr: str, token: str) -> None:
        before = len(tokenizer)
        tokenizer.add_special_tokens({attr: token})
        if len(tokenizer) > before:
            added.append(token)

    if tokenizer.mask_token is None:
        _set("mask_token", MASK_TOKEN)
    if tokenizer.pad_token is None:
        if tokenizer.eos_token is not None:
            tokenizer.pad_token = tokenizer.eos_token
        else:
            _set("pad_token", PAD_TOKEN)
    return added
