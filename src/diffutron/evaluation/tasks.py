"""The task registry: every CETVEL task Diffutron can run, as plain data.

    task = get_task("xcopa_tr")
    r = render(task, item)            # -> Rendered(prompt, choices, gold)
    resolve_tasks("diffutron,turkmorfbench")   # group names expand; unknown names raise

A task is a :class:`Task`: a prompt template (``str.format`` over the fields of a prepared item),
its choices (fixed, or ``None`` for the item's own ``choices``), the metrics, the split CETVEL
scores, where the data lives (hub dataset and config, the original release's file names for
``--data-dir``, or a Python package) and one ``prepare`` function that turns a raw row (hub field
names, or the release's) into the template's fields. Prompts and choices follow ``cetvel.md``, which
quotes the CETVEL task YAMLs; a multiple-choice answer is scored as ``delimiter + choice`` after the
prompt (lm-eval's ``target_delimiter``, a space).

A bad row raises :class:`BadItem` in ``prepare``: the loader reports it with its file and line and
skips it. Placeholder cells (``xxx``, ``nan``, empty), U+FFFD (a damaged character) and
out-of-range labels are bad rows.

Tasks in other languages than Turkish follow the same recipe (``xcopa_et``); each language pack
names its tasks, and the group ``diffutron_<code>`` runs them (``docs/languages.md``).

What it does not know: how to read files (``sources.py``) or score anything (``runner.py``).
Where ``cetvel.md`` is not explicit (the Turkish PLU prompts beyond its example, the label order of
a hub dataset that stores news categories as bare integers) the choice made is written next to the
task.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from ..languages import LANGUAGES, get_language
from ..text.normalize import normalize

MULTIPLE_CHOICE = "multiple_choice"
GENERATE = "generate"
PLACEHOLDERS = {"", "xxx", "nan", "none", "null", "n/a"}


class BadItem(ValueError):
    """A row that cannot become an item (missing or placeholder field, bad label, damaged text)."""


@dataclass(frozen=True)
class HubSource:
    path: str
    configs: tuple[str | None, ...] = (None,)  # several configs are concatenated (TurkishMMLU)
    revision: str | None = None  # pin a commit; ``--dataset-revision`` overrides


@dataclass(frozen=True)
class Task:
    name: str
    kind: str  # MULTIPLE_CHOICE or GENERATE
    prompt: str  # str.format template over the prepared item
    prepare: Callable[[Mapping[str, Any]], dict[str, Any]]
    metrics: tuple[str, ...]
    split: str
    choices: tuple[str, ...] | None = None  # None: the item's own "choices"
    hub: HubSource | None = None
    local: Mapping[str, tuple[str, ...]] = field(default_factory=dict)  # split ("*": any) -> release files
    reader: str = "auto"  # how to read the release files (sources.READERS)
    folder: str | None = None  # --data-dir: also look in DIR/<folder>/ (shared by related tasks)
    package: str | None = None  # a Python package that ships the data (sources.PACKAGES)
    delimiter: str = " "  # between the prompt and a choice (lm-eval's target_delimiter)
    until: tuple[str, ...] = ("\n",)  # generation: cut the answer at the first of these
    max_new_tokens: int = 64  # generation: CETVEL's 64 new tokens
    truncate_field: str | None = None  # generation: the field shortened when a prompt is too long
    description: str = ""


@dataclass
class Rendered:
    prompt: str
    choices: list[str]  # empty for generation tasks
    gold: int | list[str]  # index of the right choice, or the reference answers


# ---------------------------------------------------------------------------------------------
# Field helpers shared by the prepare functions
# ---------------------------------------------------------------------------------------------


def text(row: Mapping[str, Any], *keys: str) -> str:
    """The first of ``keys`` present in ``row`` as clean text; BadItem when missing or a placeholder."""
    for key in keys:
        if key in row and row[key] is not None:
            value = row[key]
            if isinstance(value, (int, float)) and not isinstance(value, bool):
                value = str(value)  # an option such as 1923 stored as a JSON number
            if not isinstance(value, str):
                raise BadItem(f"{key}: expected text, got {type(value).__name__} {value!r}")
            if value.strip().lower() in PLACEHOLDERS:
                raise BadItem(f"{key}: placeholder value {value!r}")
            if "\ufffd" in value:
                raise BadItem(f"{key}: damaged character (U+FFFD) in {value[:60]!r}")
            return normalize(value)
    raise BadItem(f"missing field {' / '.join(keys)}")


def label_index(value: Any, n: int, names: Mapping[str, int] | None = None) -> int:
    """A label as an index in 0..n-1 from an int, a digit string or a name in ``names``."""
    if isinstance(value, str):
        key = value.strip()
        if names and key.lower() in names:
            return names[key.lower()]
        try:
            value = int(float(key))
        except ValueError:
            raise BadItem(f"label {value!r} is not one of {sorted(names or {})} or a number") from None
    if isinstance(value, bool) or not isinstance(value, (int, float)) or int(value) != value:
        raise BadItem(f"label {value!r} is not an integer")
    if not 0 <= int(value) < n:
        raise BadItem(f"label {int(value)} is outside 0..{n - 1}")
    return int(value)


def _first(row: Mapping[str, Any], *keys: str) -> Any:
    for key in keys:
        if key in row and row[key] is not None:
            return row[key]
    raise BadItem(f"missing field {' / '.join(keys)}")


# ---------------------------------------------------------------------------------------------
# Prepare functions: raw row (hub or release field names) -> template fields
# ---------------------------------------------------------------------------------------------


def prepare_belebele(row):
    answer = label_index(_first(row, "correct_answer_num"), 5)  # 1-based: "1".."4"
    if answer == 0:
        raise BadItem("correct_answer_num is 1-based, got 0")
    return {
        "passage": text(row, "flores_passage"),
        "question": text(row, "question").strip(),  # CETVEL: question.strip()
        **{f"a{i}": text(row, f"mc_answer{i}") for i in range(1, 5)},
        "label": answer - 1,
    }


def prepare_exams(row):
    q = _first(row, "question")
    if not isinstance(q, Mapping):
        raise BadItem("question: expected an object with stem and choices")
    choices = q.get("choices")
    if isinstance(choices, Mapping):  # hub: {"text": [...], "label": [...]}
        texts, labels = list(choices.get("text") or []), list(choices.get("label") or [])
    elif isinstance(choices, list):  # release: [{"text": ..., "label": ...}, ...]
        texts = [c.get("text") for c in choices if isinstance(c, Mapping)]
        labels = [c.get("label") for c in choices if isinstance(c, Mapping)]
    else:
        raise BadItem("question.choices missing")
    if len(texts) < 2 or len(texts) != len(labels):
        raise BadItem(f"question.choices: {len(texts)} texts for {len(labels)} labels")
    options = [text({"choice": t}, "choice") for t in texts]
    key = text(row, "answerKey").strip()
    if key not in labels:
        raise BadItem(f"answerKey {key!r} not among the choice labels {labels}")
    return {"question": text(q, "stem"), "choices": options, "label": labels.index(key)}


IRONY_NAMES = {"non-ironic": 0, "non_ironic": 0, "not ironic": 0, "ironic": 1, "hayır": 0, "evet": 1}
OFFENSE_NAMES = {"not": 0, "off": 1}


def prepare_irony(row):
    return {"text": text(row, "text", "sentence"), "label": label_index(_first(row, "label"), 2, IRONY_NAMES)}


def prepare_offense(row):
    label = label_index(_first(row, "subtask_a", "label"), 2, OFFENSE_NAMES)
    return {"tweet": text(row, "tweet", "text"), "label": label}


NEWS_CHOICES = ("spor", "magazin", "siyaset", "sağlık", "ekonomi")
# Names as they appear in the hub dataset's labels and the 1150 Haber folders (ASCII spellings).
NEWS_NAMES = {
    "spor": 0,
    "magazin": 1,
    "siyaset": 2,
    "siyasi": 2,
    "sağlık": 3,
    "saglik": 3,
    "ekonomi": 4,
}


def prepare_news(row):
    # An integer label is read in CETVEL's choice order; hub labels stored as a ClassLabel are turned
    # into their names by the loader first, which avoids guessing the order.
    return {"text": text(row, "text"), "label": label_index(_first(row, "label", "category"), 5, NEWS_NAMES)}


NLI_CHOICES = ("TUTARLI", "ALAKASIZ", "ÇELİŞKİLİ")
NLI_NAMES = {"entailment": 0, "neutral": 1, "contradiction": 2}


def prepare_nli(row):
    label = _first(row, "label", "gold_label")
    if label in (-1, "-1", "-"):
        raise BadItem("no gold label (annotators disagreed: -1)")
    return {
        "premise": text(row, "premise", "sentence1"),
        "hypothesis": text(row, "hypothesis", "sentence2"),
        "label": label_index(label, 3, NLI_NAMES),
    }


STS_CHOICES = (
    "Benzerlik Yok",
    "Düşük Benzerlik",
    "Orta Benzerlik",
    "Yüksek Benzerlik",
    "Çok Yüksek Benzerlik",
    "Mantıksal Olarak Aynı",
)
STS_CUTS = (0.5, 1.5, 2.5, 3.5, 4.5)


def sts_bin(score: float) -> int:
    """Index of the bin of a 0..5 similarity score; a score on a cut goes to the upper bin."""
    return sum(score >= c for c in STS_CUTS)


def prepare_sts(row):
    raw = _first(row, "score", "similarity_score")
    try:
        score = float(raw)
    except (TypeError, ValueError):
        raise BadItem(f"score {raw!r} is not a number") from None
    if not 0.0 <= score <= 5.0:
        raise BadItem(f"score {score} is outside 0..5")
    return {
        "s1": text(row, "sentence1", "sentence1_tr"),
        "s2": text(row, "sentence2", "sentence2_tr"),
        "label": sts_bin(score),
    }


def _lower_first(s: str) -> str:
    # CETVEL (lm-eval's xcopa utils) lower-cases with Python's rules, so "I" -> "i", not "ı".
    return s[:1].lower() + s[1:]


def xcopa_prepare(language: str) -> Callable[[Mapping[str, Any]], dict[str, Any]]:
    """XCOPA's ``prepare`` in ``language``: the premise, its pack's connective for the question
    (lm-eval's xcopa: Turkish "çünkü" / "bu yüzden", Estonian "sest" / "seetõttu"), and the two
    alternatives with their first letter lower-cased."""
    connectives = get_language(language).connectives

    def prepare(row: Mapping[str, Any]) -> dict[str, Any]:
        premise = text(row, "premise").strip()
        question = text(row, "question").strip()
        if question not in connectives:
            raise BadItem(f"question {question!r} is neither cause nor effect")
        return {
            "premise": premise[:-1] if premise.endswith(".") else premise,
            "connector": connectives[question],
            "choices": [_lower_first(text(row, "choice1")), _lower_first(text(row, "choice2"))],
            "label": label_index(_first(row, "label"), 2),
        }

    return prepare


XCOPA_CONNECTORS = get_language("tr").connectives
prepare_xcopa = xcopa_prepare("tr")


def _endings(row, n: int) -> list[str]:
    return [text(row, f"ending{i}") for i in range(n)]


def prepare_plu_goal_inference(row):
    return {
        "step": text(row, "sent2"),
        "choices": _endings(row, 4),
        "label": label_index(_first(row, "label"), 4),
    }


def prepare_plu_step_inference(row):
    return {
        "goal": text(row, "sent2"),
        "choices": _endings(row, 4),
        "label": label_index(_first(row, "label"), 4),
    }


def prepare_plu_next_event(row):
    return {
        "goal": text(row, "sent1"),
        "step": text(row, "sent2"),
        "choices": _endings(row, 4),
        "label": label_index(_first(row, "label"), 4),
    }


def prepare_plu_step_ordering(row):
    # label = which of the two steps comes first; the choices are the two orders.
    a, b = _endings(row, 2)
    return {
        "goal": text(row, "sent2"),
        "choices": [f"Önce: {a} Sonra: {b}", f"Önce: {b} Sonra: {a}"],
        "label": label_index(_first(row, "label"), 2),
    }


MMLU_LETTERS = ("A", "B", "C", "D", "E")


def prepare_mmlu(row):
    choices = _first(row, "choices")
    if not isinstance(choices, list) or len(choices) != 5:
        raise BadItem(f"choices: expected a list of 5 options, got {choices!r:.80}")
    options = {f"c{i}": text({"choice": c}, "choice") for i, c in enumerate(choices)}
    answer = text(row, "answer").strip().upper()
    if answer not in MMLU_LETTERS:
        raise BadItem(f"answer {answer!r} is not a letter A-E")
    return {"question": text(row, "question").strip(), **options, "label": MMLU_LETTERS.index(answer)}


def prepare_qa(row):
    answers = _first(row, "answers")
    if isinstance(answers, Mapping):  # hub: {"text": [...], "answer_start": [...]}
        golds = list(answers.get("text") or [])
    elif isinstance(answers, list):  # SQuAD JSON: [{"text": ..., "answer_start": ...}]
        golds = [a.get("text") for a in answers if isinstance(a, Mapping)]
    else:
        raise BadItem("answers: expected a list")
    golds = [text({"answer": g}, "answer") for g in golds if isinstance(g, str) and g.strip()]
    if not golds:
        raise BadItem("no reference answer")
    return {"context": text(row, "context"), "question": text(row, "question"), "answers": golds}


def prepare_summary(row):
    return {"title": text(row, "title"), "text": text(row, "text"), "answers": [text(row, "summary")]}


def prepare_turkmorfbench(row):
    options = _first(row, "secenek")
    if not isinstance(options, list) or len(options) < 2:
        raise BadItem("secenek: expected a list of at least 2 options")
    return {
        "stem": text(row, "govde"),
        "choices": [text({"option": o}, "option") for o in options],
        "label": label_index(_first(row, "altin_sira"), len(options)),
    }


# ---------------------------------------------------------------------------------------------
# The registry
# ---------------------------------------------------------------------------------------------

TASKS: dict[str, Task] = {}
GROUPS: dict[str, tuple[str, ...]] = {}


def register(task: Task) -> Task:
    if task.name in TASKS:
        raise ValueError(f"task {task.name!r} registered twice")
    TASKS[task.name] = task
    return task


MC, ACC = MULTIPLE_CHOICE, ("acc", "acc_norm")
NLI_PROMPT = (
    'Aşağıda iki cümle verilmektedir:\n\nCümle 1: "{premise}"\nCümle 2: "{hypothesis}"\n\n'
    "Bu iki cümle arasındaki ilişki nedir:"
)

register(Task(
    name="belebele_tr", kind=MC, prepare=prepare_belebele, metrics=ACC, split="test",
    prompt="P: {passage}\nQ: {question}\nA: {a1}\nB: {a2}\nC: {a3}\nD: {a4}\nAnswer:",
    choices=("A", "B", "C", "D"),
    hub=HubSource("facebook/belebele", ("tur_Latn",)),
    local={"test": ("tur_Latn.jsonl",)},
    description="reading comprehension (FLORES passages), 4 options",
))  # fmt: skip
register(Task(
    name="exams_tr", kind=MC, prepare=prepare_exams, metrics=ACC, split="validation",
    prompt="{question}",
    hub=HubSource("mhardalov/exams", ("crosslingual_tr",)),
    local={"validation": ("dev_tr.jsonl",)},
    description="high-school exam questions, the option texts as choices",
))  # fmt: skip
register(Task(
    name="ironytr", kind=MC, prepare=prepare_irony, metrics=("acc", "acc_norm", "f1"), split="validation",
    prompt="Cümle: {text}\nSoru: Bu cümlede ironi var mı?\n",
    choices=("Hayır", "Evet"),
    hub=HubSource("mcemilg/IronyTR"),
    local={"*": ("ironic.txt", "non-ironic.txt")}, reader="ironytr_lines",
    description="irony detection (F1 of the ironic class)",
))  # fmt: skip
register(Task(
    name="news_cat", kind=MC, prepare=prepare_news, metrics=("acc", "acc_norm", "macro_f1"), split="test",
    prompt="Cümle: {text}\nSoru: Bu cümlenin konusu nedir?\n Cevap:",  # sic: the space before Cevap
    choices=NEWS_CHOICES,
    hub=HubSource("mcemilg/news-cat"),
    local={"*": ("ekonomi", "magazin", "saglik", "siyasi", "spor")}, reader="news_cat_dirs",
    description="news topic classification (1150 Haber), 5 classes",
))  # fmt: skip
# NLI-TR and XNLI: no release file names here; a local copy is read as {split}.jsonl (hub fields).
for _name, _hub, _config, _split in (
    ("mnli_tr", "boun-tabi/nli_tr", "multinli_tr", "validation_matched"),
    ("snli_tr", "boun-tabi/nli_tr", "snli_tr", "test"),
    ("xnli_tr", "facebook/xnli", "tr", "test"),
):
    register(Task(
        name=_name, kind=MC, prepare=prepare_nli, metrics=ACC, split=_split, prompt=NLI_PROMPT,
        choices=NLI_CHOICES, hub=HubSource(_hub, (_config,)),
        description="natural language inference: entailment / neutral / contradiction",
    ))  # fmt: skip
register(Task(
    name="sts_tr", kind=MC, prepare=prepare_sts, metrics=ACC, split="test",
    prompt=(
        'Aşağıda iki cümle verilmektedir:\n\nCümle 1: "{s1}"\nCümle 2: "{s2}"\n\n'
        "Bu iki cümle arasında ne kadar benzerlik vardır:"
    ),
    choices=STS_CHOICES,
    hub=HubSource("emrecan/stsb-mt-turkish"),
    local={"test": ("sts-test-tr.csv",)},
    description="semantic similarity, the 0-5 score binned into 6 classes",
))  # fmt: skip
register(Task(
    name="xcopa_tr", kind=MC, prepare=prepare_xcopa, metrics=("acc",), split="test",
    prompt="{premise} {connector}",
    hub=HubSource("cambridgeltl/xcopa", ("tr",)),
    local={"test": ("test.tr.jsonl",), "validation": ("val.tr.jsonl",)},
    description="causal commonsense: which alternative is the cause / effect",
))  # fmt: skip
register(Task(
    name="xcopa_et", kind=MC, prepare=xcopa_prepare("et"), metrics=("acc",), split="test",
    prompt="{premise} {connector}",
    hub=HubSource("cambridgeltl/xcopa", ("et",)),
    local={"test": ("test.et.jsonl",), "validation": ("val.et.jsonl",)},
    description="Estonian XCOPA (data/et/ of cambridgeltl/xcopa, 100 val / 500 test, CC BY 4.0)",
))  # fmt: skip
register(Task(
    name="offenseval_tr", kind=MC, prepare=prepare_offense, metrics=("acc", "acc_norm", "f1"), split="test",
    prompt="Cümle: {tweet}\nSoru: Bu cümle nefret söylemi içermekte midir?\n",
    choices=("Hayır", "Evet"),
    hub=HubSource("coltekin/offenseval2020_tr"),
    description="offensive language in tweets (F1 of the offensive class)",
))  # fmt: skip

# Turkish PLU (wikiHow procedures). cetvel.md quotes the next-event prompt; the other three follow it
# with the fields each task has (step -> goal, goal -> step, goal -> order of two steps).
for _task, _prepare, _prompt in (
    ("goal_inference", prepare_plu_goal_inference, "Adım: {step} Hedef:"),
    ("next_event_prediction", prepare_plu_next_event, "Hedef: {goal} Adım: {step} Bir sonraki adım:"),
    ("step_inference", prepare_plu_step_inference, "Hedef: {goal} Adım:"),
    ("step_ordering", prepare_plu_step_ordering, "Hedef: {goal}"),
):
    _file = _task.replace("_", "-")
    register(Task(
        name=f"turkish_plu_{_task}", kind=MC, prepare=_prepare, metrics=ACC, split="test", prompt=_prompt,
        hub=HubSource(f"mcemilg/turkish-plu-{_file}"), local={"test": (f"{_file}-test.csv",)}, folder="turkish_plu",
        description=f"Turkish PLU {_task.replace('_', ' ')} (wikiHow)",
    ))  # fmt: skip

MMLU_SUBJECTS = (
    "Biology",
    "Chemistry",
    "Geography",
    "History",
    "Mathematics",
    "Philosophy",
    "Physics",
    "Religion_and_Ethics",
    "Turkish_Language_and_Literature",
)
MMLU_PROMPT = "Soru: {question}\nA. {c0}\nB. {c1}\nC. {c2}\nD. {c3}\nE. {c4}\nCevap:"


def _mmlu(name: str, subjects: tuple[str, ...]) -> Task:
    return Task(
        name=name, kind=MC, prepare=prepare_mmlu, metrics=ACC, split="test", prompt=MMLU_PROMPT,
        choices=MMLU_LETTERS, hub=HubSource("AYueksel/TurkishMMLU", subjects),
        local={"test": tuple(f"TurkishMMLU_{s}.json" for s in subjects)}, folder="turkishmmlu",
        description=f"TurkishMMLU ({', '.join(subjects) if len(subjects) == 1 else 'all 9 subjects'})",
    )  # fmt: skip


register(_mmlu("turkishmmlu", MMLU_SUBJECTS))
for _s in MMLU_SUBJECTS:
    register(_mmlu(f"turkishmmlu_{_s.lower()}", (_s,)))

QA_PROMPT = "Kaynak: {context}\n\nSoru: {question}\n\nCevap:"
register(Task(
    name="xquad_tr", kind=GENERATE, prepare=prepare_qa, metrics=("exact_match", "f1"), split="validation",
    prompt=QA_PROMPT, hub=HubSource("google/xquad", ("xquad.tr",)),
    local={"validation": ("xquad.tr.json",)}, truncate_field="context",
    description="extractive QA answered by generation (SQuAD exact match / F1)",
))  # fmt: skip
register(Task(
    name="tquad", kind=GENERATE, prepare=prepare_qa, metrics=("exact_match", "f1"), split="validation",
    prompt=QA_PROMPT, hub=HubSource("mcemilg/tquad"),
    local={"validation": ("dev-v0.1.json",)}, truncate_field="context",
    description="TQuAD: Turkish Wikipedia QA answered by generation",
))  # fmt: skip
register(Task(
    name="xlsum_tr", kind=GENERATE, prepare=prepare_summary, metrics=("rouge1", "rouge2", "rougeL"),
    split="test", prompt="Başlık: {title}\n\nMetin: {text}\n\nÖzet:",
    hub=HubSource("csebuetnlp/xlsum", ("turkish",)), local={"test": ("turkish_test.jsonl",)},
    until=("\n\n",), truncate_field="text",
    description="BBC Turkish news summarisation (ROUGE)",
))  # fmt: skip
register(Task(
    name="turkmorfbench", kind=MC, prepare=prepare_turkmorfbench, metrics=ACC, split="test",
    prompt="Kelime: {stem}\nÇekimli biçim:", package="turkmorfbench",
    description="TurkMorfBench core set (PyPI, CC BY 4.0): pick the correctly inflected form",
))  # fmt: skip

# CETVEL is a Turkish benchmark: its groups leave out the tasks of the other language packs.
_NOT_TURKISH = {n for code, pack in LANGUAGES.items() if code != "tr" for n in pack.tasks}

GROUPS.update(
    diffutron=get_language("tr").tasks,
    **{f"diffutron_{code}": pack.tasks for code, pack in LANGUAGES.items()},
    turkish_plu=tuple(n for n in TASKS if n.startswith("turkish_plu_")),
    cetvel_mc=tuple(
        n
        for n, t in TASKS.items()
        if t.kind == MC and t.package is None and not n.startswith("turkishmmlu_") and n not in _NOT_TURKISH
    ),
    cetvel_gen=tuple(n for n, t in TASKS.items() if t.kind == GENERATE and n not in _NOT_TURKISH),
)


def get_task(name: str) -> Task:
    if name not in TASKS:
        raise ValueError(
            f"unknown task {name!r}; known tasks: {', '.join(TASKS)}; groups: {', '.join(GROUPS)}"
        )
    return TASKS[name]


def resolve_tasks(spec: str | list[str]) -> list[Task]:
    """Task names and group names (comma-separated or a list) -> tasks, in order, without repeats."""
    names = [s.strip() for s in (spec.split(",") if isinstance(spec, str) else spec) if s.strip()]
    out: list[Task] = []
    for name in names:
        for member in GROUPS.get(name, (name,)):
            task = get_task(member)
            if task not in out:
                out.append(task)
    if not out:
        raise ValueError("no tasks given")
    return out


def render(task: Task, item: Mapping[str, Any]) -> Rendered:
    """The exact prompt and choices a task shows the model for one prepared item."""
    prompt = task.prompt.format_map(item)
    if task.kind == GENERATE:
        return Rendered(prompt, [], list(item["answers"]))
    choices = list(task.choices) if task.choices is not None else list(item["choices"])
    return Rendered(prompt, choices, int(item["label"]))
