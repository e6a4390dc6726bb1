"""Checkable skills: instruction rows with exactly one right answer, generated offline by rule.

What it is: the data side of the skill table (``evaluation/skills.py``). Each skill turns an item
(1-4 words of the embedded corpus, or a number in digits or in Turkish words) into an instruction and
its one right answer, so that a model's answer is either right or wrong, and a stage's gain or loss is
visible as exact match rather than only as a perplexity::

    tekrar   "Aynen yaz: büyük millet"                    -> "büyük millet"
    ters     "Ters sırayla yaz: büyük millet"             -> "millet büyük"
    büyük    "Büyük harflerle yaz: işte ılık"             -> "İŞTE ILIK" (i -> İ, ı -> I)
    ilk/son  "İlk kelimeyi yaz: ..." / "Son kelimeyi yaz: ..."  -> one of the two words
    say      "Kelimeleri say: milletin büyük gücü"        -> "3"
    tek      "Tek mi çift mi: 3047"                       -> "tek"
    basamak  "Kaç basamaklı: üç bin kırk yedi"            -> "4" (the answer's length in digits)
    rakam    "Rakamla yaz: üç bin kırk yedi"              -> "3047" (the quickstart's task skill)
    sayı     "Sayıyı yazıyla yaz: 3047"                   -> "üç bin kırk yedi" (task)
    ek       "Çoğul ve bulunma eki ekle: kitap"           -> "kitaplarda" (task)

The item comes last in the question, after a colon and a space: with the compact chat template
(text/chat.py) it sits right before the answer, and each of its words is spelled by the BPE with
the leading space it has in the answer, so copying a word is copying its tokens.

Recipes use them by name as built-in SFT sources: ``builtin: skills-general`` (the general skills a
``tiny`` model learns in the demo's minutes: ``say``, ``tek``, ``basamak``, interleaved), ``builtin:
skills-copy`` (the five that copy words of the question, which need far more rows: ``COPY_SKILLS``),
``builtin: skill-<name>`` (one skill). Items are split by a hash of the item into
training items and held-out items (one in ten): the training sets never contain a held-out item,
and ``heldout(name, n)`` gives the evaluation items.

The number skills take a number of 1-9,999, one in ten held out by its digits in every skill and direction
(``basamak`` draws each length 1-4 as often, the others any number: most have four digits).
``rakam``, the quickstart's task skill, reads it out of Turkish words into digits: zeros are implied and
``bir`` is dropped before ``yüz`` and ``bin``, and every answer token is one of ten digits in a fixed
place. ``sayı`` writes it in words, apart as the orthography wants (num2words joins them). The corpus
tokenizer spells digits one by one (text/tokenizer.py), so each place is one token. The ``tiny`` model
learns ``rakam`` in the demo's minutes when trained on nearly whole answers, not ``sayı``, whose words
are 1-4 tokens each so that a word's distance to its digit changes (docs/benchmarks.md).

The suffix rule (``ek``) is the regular one: plural ``-ler``/``-lar`` by the last vowel (front
e i ö ü -> ler, back a ı o u -> lar), then the locative, whose consonant is always ``d`` after the
plural's ``r`` and whose vowel follows the plural's (``lerde``/``larda``). Loanwords that break
harmony (saat -> saatlerde) are answered by the rule: the skill is the rule. Its held-out items are
words never seen in an ``ek`` answer, so the model must copy a token it was never trained to output
there; the ``tiny`` model of the quickstart memorises its training words instead (0 % held-out after
1,500 steps, docs/benchmarks.md), which is why the quickstart's task stage trains ``rakam``.
"""

from __future__ import annotations

import functools
import itertools
import random
import re
import zlib
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

from ..text.normalize import turkish_lower, turkish_upper
from .sources import embedded_corpus

__all__ = [
    "SKILLS",
    "Skill",
    "builtin_sets",
    "heldout",
    "is_heldout",
    "number_words",
    "words_number",
    "plural_locative",
    "skill_rows",
    "skills_of_builtin",
]

FRONT_VOWELS, BACK_VOWELS = set("eiöü"), set("aıou")
_WORD = re.compile(r"^[a-zçğıöşüâîû]+$")
HELDOUT_SHARE = 10  # one item in ten is held out (crc32 of the item)


def plural_locative(word: str) -> str:
    """``ev`` -> ``evlerde``, ``kitap`` -> ``kitaplarda``: plural + locative by vowel harmony."""
    for ch in reversed(turkish_lower(word)):
        if ch in FRONT_VOWELS or ch in "î":
            return word + "lerde"
        if ch in BACK_VOWELS or ch in "âû":
            return word + "larda"
    raise ValueError(f"no vowel in {word!r}: the suffix rule needs one")


_ONES = ("", "bir", "iki", "üç", "dört", "beş", "altı", "yedi", "sekiz", "dokuz")
_TENS = ("", "on", "yirmi", "otuz", "kırk", "elli", "altmış", "yetmiş", "seksen", "doksan")
NUMBER_MAX = 9999  # the number skills' items: 1..NUMBER_MAX


def number_words(n: int) -> str:
    """``3047`` -> ``üç bin kırk yedi``, ``100`` -> ``yüz``: 1..999,999 in Turkish words, written apart."""
    if not 0 < n < 1_000_000:
        raise ValueError(f"number_words takes 1..999999, got {n}")
    thousands, rest = divmod(n, 1000)
    words = [] if thousands in (0, 1) else number_words(thousands).split()
    words += ["bin"] if thousands else []
    hundreds, rest = divmod(rest, 100)
    words += ([] if hundreds in (0, 1) else [_ONES[hundreds]]) + (["yüz"] if hundreds else [])
    words += [w for w in (_TENS[rest // 10], _ONES[rest % 10]) if w]
    return " ".join(words)


def words_number(words: str) -> int:
    """``üç bin kırk yedi`` -> ``3047``: the inverse of :func:`number_words`."""
    total, group = 0, 0
    for w in words.split():
        if w == "bin":
            total, group = (group or 1) * 1000, 0
        elif w == "yüz":
            group = (group or 1) * 100
        elif w in _TENS[1:]:
            group += 10 * _TENS.index(w)
        elif w in _ONES[1:]:
            group += _ONES.index(w)
        else:
            raise ValueError(f"not a Turkish number word: {w!r}")
    return total + group


@dataclass(frozen=True)
class Skill:
    name: str
    kind: str  # "general" | "task"
    instruction: str
    # "pair" (2 words) | "count" (1-4 words) | "word" (one word, each once) | "number" | "number-words"
    # (1..9,999: most have four digits) | "number-words-any" (in words, every length 1-4 as often)
    item: str
    answer: Callable[[str], str]


def _words(s: str) -> list[str]:
    return s.split()


SKILLS: dict[str, Skill] = {
    s.name: s
    for s in (
        Skill("tekrar", "general", "Aynen yaz:", "pair", lambda s: s),
        Skill("ters", "general", "Ters sırayla yaz:", "pair", lambda s: " ".join(_words(s)[::-1])),
        # 1-2 words: upper case is spelled byte by byte by the corpus BPE (~5 tokens a word)
        Skill("büyük", "general", "Büyük harflerle yaz:", "pair", turkish_upper),
        Skill("ilk", "general", "İlk kelimeyi yaz:", "pair", lambda s: _words(s)[0]),
        Skill("son", "general", "Son kelimeyi yaz:", "pair", lambda s: _words(s)[-1]),
        Skill("say", "general", "Kelimeleri say:", "count", lambda s: str(len(_words(s)))),
        Skill("tek", "general", "Tek mi çift mi:", "number", lambda s: "tek" if int(s) % 2 else "çift"),
        Skill("basamak", "general", "Kaç basamaklı:", "number-words-any", lambda s: str(len(str(words_number(s))))),
        Skill("sayı", "task", "Sayıyı yazıyla yaz:", "number", lambda s: number_words(int(s))),
        Skill("rakam", "task", "Rakamla yaz:", "number-words", lambda s: str(words_number(s))),
        Skill("ek", "task", "Çoğul ve bulunma eki ekle:", "word", plural_locative),
    )
}


def is_heldout(item: str) -> bool:
    """Whether ``item`` belongs to the held-out items (a fixed hash: the same on every run)."""
    return zlib.crc32(item.encode("utf-8")) % HELDOUT_SHARE == 0


# Items are frequent words (>= 20 times in the corpus): the corpus BPE spells each as one token (measured:
# all 1,266 of them with the quickstart's 8k tokenizer), and a copy skill has 2 words, so the answer copies
# from a fixed distance. A tiny model learns a fixed-distance copy in a few hundred steps; with items of
# 1-4 words of 1-4 tokens each the distance varies and it had learned none after 2,000 (docs/benchmarks.md).
ITEM_MIN_COUNT = 20


@functools.lru_cache(maxsize=4)
def vocabulary(
    corpus: str = "embedded", min_count: int = ITEM_MIN_COUNT, max_len: int = 8
) -> tuple[str, ...]:
    """Lower-case words of the corpus (letters only, 2..max_len letters, seen >= min_count times)."""
    counts: Counter[str] = Counter()
    for doc in embedded_corpus(corpus):
        for w in doc.split():
            w = w.strip(".,;:!?\"'“”‘’()…-")
            if w and w[0].islower() and _WORD.match(w) and 2 <= len(w) <= max_len:
                counts[w] += 1
    return tuple(sorted(w for w, c in counts.items() if c >= min_count))


def _items(kind: str, heldout_items: bool, seed: int, corpus: str) -> Iterator[str]:
    """An endless seeded stream of items of one kind, from the training or the held-out side."""
    vocab = vocabulary(corpus)
    rng = random.Random(seed)
    if kind == "word":
        vowels = FRONT_VOWELS | BACK_VOWELS | set("âîû")
        words = [w for w in vocab if is_heldout(w) == heldout_items and vowels & set(w) and len(w) >= 3]
        rng.shuffle(words)
        yield from words  # finite: each word once
        return
    while True:
        if kind in ("number", "number-words", "number-words-any"):
            if kind == "number-words-any":
                digits = rng.randint(1, len(str(NUMBER_MAX)))
                number = rng.randint(10 ** (digits - 1), 10**digits - 1)
            else:
                number = rng.randint(1, NUMBER_MAX)
            item = str(number) if kind == "number" else number_words(number)
            if is_heldout(str(number)) == heldout_items:
                yield item
            continue
        low, high = (2, 2) if kind == "pair" else (1, 4)
        phrase = " ".join(rng.choice(vocab) for _ in range(rng.randint(low, high)))
        if is_heldout(phrase) == heldout_items:
            yield phrase


def _row(skill: Skill, item: str) -> dict[str, Any]:
    # the item inside the instruction, not in alpaca's "input" (joined after "\n\n"): see the module doc
    return {"instruction": f"{skill.instruction} {item}", "output": skill.answer(item), "item": item}


def skill_rows(
    name: str, n: int, *, heldout_items: bool = False, seed: int = 0, corpus: str = "embedded"
) -> list[dict[str, Any]]:
    """``n`` alpaca rows of one skill (fewer for a word skill whose vocabulary runs out)."""
    if name not in SKILLS:
        raise ValueError(f"unknown skill {name!r}; available: {sorted(SKILLS)}")
    skill = SKILLS[name]
    seed = seed + zlib.crc32(name.encode("utf-8"))  # each skill its own items
    out: list[dict[str, Any]] = []
    seen: set[str] = set()
    for item in _items(skill.item, heldout_items, seed, corpus):
        if len(out) >= n:
            break
        if heldout_items and item in seen:  # an evaluation item counts once (one-digit numbers: one of 9)
            continue
        seen.add(item)
        out.append(_row(skill, item))
    return out


def heldout(name: str, n: int, corpus: str = "embedded") -> list[dict[str, Any]]:
    """The evaluation items of a skill: held-out items only, the same on every call."""
    return skill_rows(name, n, heldout_items=True, seed=12345, corpus=corpus)


ROWS_PER_SKILL = 1500
# A skill of its own (``skill-<name>``) stops here unless a source's ``max_rows`` stops it sooner: the
# pair and number items never run out. More than a quickstart task stage draws (~21k rows).
ROWS_ALONE = 30_000


# Copying a word of the question: a tiny model needs ~48,000 rows of one such skill alone to learn it,
# and learned none in a mix (docs/benchmarks.md "Copying needs nearly whole answers"), so these are a set
# of their own (``skills-copy``) and ``skills-general`` holds the ones it learns in the demo's minutes.
COPY_SKILLS = ("tekrar", "ters", "büyük", "ilk", "son")
_SETS = {
    "skills-general": tuple(n for n, s in SKILLS.items() if s.kind == "general" and n not in COPY_SKILLS),
    "skills-copy": COPY_SKILLS,
}


def _interleaved(names: tuple[str, ...]) -> Iterator[dict[str, Any]]:
    rows = [skill_rows(name, ROWS_PER_SKILL) for name in names]
    for group in zip(*rows, strict=False):  # interleaved: a max_rows cut keeps every skill
        yield from group


def _one(name: str) -> Iterator[dict[str, Any]]:
    """Training rows of one skill: ``ROWS_ALONE`` of them, all its words for ``ek`` (fewer)."""
    skill = SKILLS[name]
    items = _items(skill.item, False, zlib.crc32(name.encode("utf-8")), "embedded")
    for item in itertools.islice(items, ROWS_ALONE):
        yield _row(skill, item)


def builtin_sets() -> dict[str, Callable[[], Iterator[dict[str, Any]]]]:
    """The built-in SFT sources this module provides: ``skills-general``, ``skills-copy``, ``skill-<name>``."""
    sets: dict[str, Callable[[], Iterator[dict[str, Any]]]] = {
        key: functools.partial(_interleaved, names) for key, names in _SETS.items()
    }
    for name in SKILLS:
        sets[f"skill-{name}"] = functools.partial(_one, name)
    return sets


def skills_of_builtin(builtin: str) -> list[str]:
    """The skills a built-in source trains (none for a source that is not a skill set)."""
    if builtin in _SETS:
        return list(_SETS[builtin])
    if builtin.startswith("skill-") and builtin[6:] in SKILLS:
        return [builtin[6:]]
    return []
