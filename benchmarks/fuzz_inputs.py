"""Hostile inputs: a generated fuzz suite over every kind of file and text the CLI reads.

    python benchmarks/fuzz_inputs.py [--cases 1000] [--seed 0] [--families corpus,config,...] [--show-failures]

Families (each case is one ``diffutron`` command run in this process, its output captured):

* ``corpus``: text/JSONL/Parquet corpora with invalid UTF-8, NUL bytes, a huge single line, empty and
  binary files, truncated ``.gz``, Parquet without the column, unreadable files in a folder, random
  bytes — read by ``diffutron perplexity`` (and, for a few, ``diffutron train``);
* ``config``: YAML configs with wrong keys, types, negative or absurd values, missing files, broken
  YAML (``diffutron train``), and recipes likewise (``diffutron recipe check``);
* ``prompt``: prompts and infill texts — empty, only holes, longer than the context, control
  characters, right-to-left marks, emoji, 10,000 holes, random Unicode (``generate``, ``infill``);
* ``evaldata``: evaluation files with missing columns, labels out of range, empty files, other
  encodings, binary (``diffutron eval --data-dir``);
* ``checkpoint``: model folders with a truncated safetensors file, another architecture's config, a
  tokenizer without a mask token, broken JSON (``generate``, ``train`` resuming from it).

A case passes when it ends either in success (bad rows skipped *and listed*), or in a clean error: a
non-zero exit with one ``diffutron: error:`` paragraph (no traceback) that names the file, line or key
it was given. It fails on an escaped exception (a raw traceback), an error that names nothing, or a
half-written output (a temporary file left behind, or an output file written by a failed command).
Prints the counts per family and outcome; exits 1 if any case failed. ``tests/test_fuzz_inputs.py``
runs a reduced form (a few cases per family). Runs offline (``HF_HUB_OFFLINE=1``).
"""

from __future__ import annotations

import argparse
import contextlib
import gzip
import io
import json
import os
import random
import shutil
import signal
import sys
import tempfile
import time
import traceback
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))  # the shared sentence list beside this script
from turkish_sentences import SENTENCES  # noqa: E402

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
os.environ.setdefault("TQDM_DISABLE", "1")

MICRO = dict(hidden_size=64, num_hidden_layers=2, num_attention_heads=2, intermediate_size=128)
FAMILIES = ("corpus", "config", "prompt", "evaldata", "checkpoint")


@dataclass
class Case:
    family: str
    name: str
    argv: list[str]
    names: list[str] = field(default_factory=list)  # an error must mention one of these
    must_not_exist: list[Path] = field(default_factory=list)  # outputs a failed command must not leave
    workdir: Path | None = None  # scanned for temporary leftovers


@dataclass
class Outcome:
    case: Case
    kind: str  # ok | error | FAIL-traceback | FAIL-unnamed | FAIL-half-written | FAIL-silent
    message: str = ""
    seconds: float = 0.0


# --- the fixture: a micro model, a corpus, a base config -----------------------------------------


def build_fixture(root: Path) -> dict:
    from transformers import ModernBertForMaskedLM

    from diffutron.models.checkpoint import DiffusionSettings, save_checkpoint
    from diffutron.models.presets import preset_config
    from diffutron.text.tokenizer import train_tokenizer

    root.mkdir(parents=True, exist_ok=True)
    rng = random.Random(0)
    docs = [" ".join(rng.choice(SENTENCES) for _ in range(rng.randint(1, 4))) for _ in range(120)]
    corpus = root / "corpus.txt"
    corpus.write_text("\n".join(docs) + "\n", encoding="utf-8")
    tok = train_tokenizer(docs, vocab_size=400, min_frequency=1, model_max_length=128)
    import torch

    torch.manual_seed(0)
    net = ModernBertForMaskedLM(preset_config("tiny", tok, max_position_embeddings=128, **MICRO))
    model = root / "model"
    save_checkpoint(model, net, tok, DiffusionSettings(mask_token_id=tok.mask_token_id))
    base = {
        "model": {"preset": "tiny", "overrides": dict(MICRO)},
        "tokenizer": {"path": str(model)},
        "data": {"sources": [str(corpus)], "block_size": 32, "val_fraction": 0.05},
        "training": {
            "max_steps": 1, "batch_size": 4, "eval_every": 0, "eval_blocks": 2, "eval_t_samples": 1,
            "save_every": 0, "log_every": 1, "warmup_steps": 1, "precision": "no",
        },
    }
    return {"root": root, "corpus": corpus, "model": model, "base": base, "docs": docs}


def _yaml(path: Path, data) -> Path:
    import yaml

    path.write_text(yaml.safe_dump(data, allow_unicode=True), encoding="utf-8")
    return path


# --- case generators (each takes the fixture, a case folder, an rng) ------------------------------

HOSTILE_TEXT = [
    "",
    " ",
    "<mask>",
    "<mask:3><mask:3>",
    "[...]" * 5,
    "<mask:0>",
    "<mask:-4>",
    "<mask:999999>",
    "<mask:abc>",
    "Ankara " * 2000,
    "\x00\x01\x02 Ankara \x1b[31m kırmızı",
    "\u202eİstanbul\u202c ve \u200fAnkara",
    "Merhaba 👋🏽 dünya 🇹🇷 🧿",
    "\ufeffBOM ile başlayan metin",
    "İ̇stanbul ı i I İ",
    "\ud800",
    "a\r\nb\rc\n",
    "<mask>" * 10000,
    "Ankara <mask:2> şehridir. " * 300,
    "\t\t\t",
    "[Question]Soru[/Question][Answer]",
]


def _random_text(rng: random.Random) -> str:
    pools = [
        "abcçdefgğhıijklmnoöprsştuüvyz ABCÇDEFGĞHIİJKLMNOÖPRSŞTUÜVYZ .,'?!",
        "<mask>[...] <mask:2>",
        "\u0000\u0007\u001b\u007f\u200b\u200e\u200f\u202a\u202e\u2066\ufeff\ufffd",
        "😀🇹🇷🧿👩‍👩‍👧‍👦",
        "ابجدهوز אבגד 漢字 ᚠᛇᚻ",
    ]
    n = rng.choice([0, 1, 5, 40, 300, 3000])
    return "".join(rng.choice(rng.choice(pools)) for _ in range(n))


def prompt_cases(fx: dict, d: Path, rng: random.Random) -> Case:
    text = rng.choice(HOSTILE_TEXT) if rng.random() < 0.5 else _random_text(rng)
    model = str(fx["model"])
    how = rng.choice(["generate", "infill", "generate-file", "infill-file", "bad-file"])
    common = ["--steps", "2", "--block-size", "8"]
    if how == "generate":
        return Case("prompt", f"generate {text[:20]!r}", ["generate", model, "--prompt", text, "--max-new-tokens", "4", *common], ["--prompt", "prompt"])
    if how == "infill":
        return Case("prompt", f"infill {text[:20]!r}", ["infill", model, "--text", text, *common], ["--text", "hole", "mask", "text"])
    f = d / "texts.txt"
    f.touch()
    if how == "bad-file":
        f.write_bytes(rng.choice([b"\xff\xfe\x00A\x00", bytes(rng.getrandbits(8) for _ in range(200)), b""]))
        kind = rng.choice(["generate", "infill"])
        flag = "--prompts-file" if kind == "generate" else "--texts-file"
        return Case("prompt", f"{kind} bad file", [kind, model, flag, str(f), *common], [str(f), "--prompt", "--text"])
    f.write_text(text + "\n" + _random_text(rng) + "\n", encoding="utf-8", errors="surrogatepass")
    if how == "generate-file":
        return Case("prompt", "generate prompts-file", ["generate", model, "--prompts-file", str(f), "--max-new-tokens", "4", *common], [str(f), "--prompt"])
    return Case("prompt", "infill texts-file", ["infill", model, "--texts-file", str(f), *common], [str(f), "--text", "hole", "mask"])


def _corpus_file(d: Path, rng: random.Random, docs: list[str], big: bool) -> tuple[Path, str]:
    good = "\n".join(rng.sample(docs, 20)).encode()
    kinds = [
        "invalid-utf8", "nul", "empty", "binary", "truncated-gz", "gz-not-gz", "jsonl-bad-lines", "jsonl-no-field",
        "jsonl-types", "parquet-no-column", "parquet-bad", "folder-unreadable", "folder-empty", "missing",
        "unsupported-ext", "whitespace-only", "crlf-bom", "huge-line", "random-bytes", "surrogates",
    ]
    kind = rng.choice(kinds)
    p = d / "corpus.txt"
    if kind == "invalid-utf8":
        p.write_bytes(good + b"\n\xff\xfe\xc3\x28 bozuk\n" + good)
    elif kind == "nul":
        p.write_bytes(good.replace(b" ", b"\x00", 5))
    elif kind == "empty":
        p.write_bytes(b"")
    elif kind == "binary":
        p = d / "corpus.jsonl"
        p.write_bytes(bytes(rng.getrandbits(8) for _ in range(rng.randint(1, 5000))))
    elif kind == "truncated-gz":
        p = d / rng.choice(["corpus.txt.gz", "corpus.jsonl.gz"])
        raw = b"\n".join(json.dumps({"text": t}).encode() for t in docs) if "jsonl" in p.name else good * 20
        data = gzip.compress(raw)
        p.write_bytes(data[: rng.randint(1, len(data) - 1)])
    elif kind == "gz-not-gz":
        p = d / "corpus.txt.gz"
        p.write_bytes(good)
    elif kind == "jsonl-bad-lines":
        p = d / "corpus.jsonl"
        lines = [json.dumps({"text": t}, ensure_ascii=False) for t in docs[:20]]
        lines.insert(rng.randint(0, 20), rng.choice(['{"text": "yarım', "[1,2]", "null", '{"text": 5}', "{}", "\x00"]))
        p.write_text("\n".join(lines), encoding="utf-8")
    elif kind == "jsonl-no-field":
        p = d / "corpus.jsonl"
        p.write_text("\n".join(json.dumps({"metin": t}, ensure_ascii=False) for t in docs[:20]), encoding="utf-8")
    elif kind == "jsonl-types":
        p = d / "corpus.jsonl"
        vals = [1, None, ["a"], {"x": 1}, True, "\ud800", "Ankara"]
        p.write_text("\n".join(json.dumps({"text": rng.choice(vals)}) for _ in range(20)), encoding="utf-8")
    elif kind == "parquet-no-column":
        import pyarrow as pa
        import pyarrow.parquet as pq

        p = d / "corpus.parquet"
        pq.write_table(pa.table({"icerik": docs[:20]}), p)
    elif kind == "parquet-bad":
        p = d / "corpus.parquet"
        p.write_bytes(b"PAR1" + bytes(rng.getrandbits(8) for _ in range(300)))
    elif kind == "folder-unreadable":
        p = d / "folder"
        p.mkdir()
        (p / "a.txt").write_bytes(good)
        bad = p / "b.txt"
        bad.write_bytes(good)
        bad.chmod(0)
        (p / "c.bin").write_bytes(b"\x00" * 10)
        os.symlink(p / "missing.txt", p / "dangling.txt")
    elif kind == "folder-empty":
        p = d / "folder"
        p.mkdir()
    elif kind == "missing":
        p = d / "yok.txt"
    elif kind == "unsupported-ext":
        p = d / "corpus.docx"
        p.write_bytes(good)
    elif kind == "whitespace-only":
        p.write_text(" \n\t\n\u200b\n\n", encoding="utf-8")
    elif kind == "crlf-bom":
        p.write_bytes(b"\xef\xbb\xbf" + good.replace(b"\n", b"\r\n"))
    elif kind == "huge-line":
        size = (50 if big else 2) << 20
        p.write_bytes((good.replace(b"\n", b" ") * (size // len(good) + 1))[:size])
    elif kind == "random-bytes":
        p.write_bytes(bytes(rng.getrandbits(8) for _ in range(rng.randint(1, 20000))))
    elif kind == "surrogates":
        p = d / "corpus.jsonl"
        p.write_text('{"text": "\\ud83d yarım emoji"}\n{"text": "Ankara"}\n', encoding="utf-8")
    return p, kind


def corpus_cases(fx: dict, d: Path, rng: random.Random, big: bool = False) -> Case:
    p, kind = _corpus_file(d, rng, fx["docs"], big)
    if rng.random() < 0.1 or kind == "huge-line":  # through training, data preparation included
        cfg = json.loads(json.dumps(fx["base"]))
        cfg["data"]["sources"] = [str(p)]
        if kind == "huge-line":  # read the line in chunks, but train on its first pieces only
            cfg["data"]["max_documents"] = 40
        if p.suffix == ".parquet" or p.name.endswith(".jsonl"):
            cfg["data"]["field"] = "text"
        out = d / "run"
        return Case("corpus", f"train {kind}", ["train", str(_yaml(d / "c.yaml", cfg)), "--out", str(out)],
                    [p.name, "data", "block"], [out / "model"], d)
    return Case("corpus", f"perplexity {kind}",
                ["perplexity", str(fx["model"]), str(p), "--t-samples", "1", "--batch-size", "8"],
                [p.name, "document", "text"], [], d)


BAD_VALUES = ["abc", -1, 0, 10**12, -1e9, [], {}, None, True, float("nan"), float("inf"), 1e308, "", [1, "x"]]


def _paths(d: dict, prefix: str = "") -> list[str]:
    out = []
    for k, v in d.items():
        key = f"{prefix}{k}"
        out += _paths(v, key + ".") if isinstance(v, dict) and k != "overrides" else [key]
    return out


def _set(d: dict, dotted: str, value) -> None:
    *head, last = dotted.split(".")
    for k in head:
        d = d.setdefault(k, {})
    d[last] = value


def config_cases(fx: dict, d: Path, rng: random.Random) -> Case:
    base = json.loads(json.dumps(fx["base"]))
    out = d / "run"
    kind = rng.choice(["value", "value", "value", "unknown-key", "yaml", "recipe"])
    quick = fx.get("quick", False)  # only values rejected while loading: no training run
    cfg_path = d / "c.yaml"
    if kind == "value":
        known = _paths(base) + ["training.lr", "training.grad_accum", "training.epochs", "training.max_minutes",
                                "training.betas", "training.keep_last", "training.weight_decay", "data.max_documents",
                                "diffusion.schedule", "diffusion.t_eps", "diffusion.normalization", "lora.enabled",
                                "lora.r", "lora.alpha", "lora.dropout", "lora.target_modules", "model.preset",
                                "model.pretrained", "tokenizer.vocab_size", "training.min_lr_ratio", "sft"]
        key = rng.choice(known)
        value = rng.choice(
            [[], {}, [1, "x"]] if quick else BAD_VALUES + ["/yok/dosya", "hub:yok/yok", "cosine", "xx"]
        )
        if quick and key in ("sft", "model.overrides", "data.sources", "training.betas", "lora.target_modules"):
            key = "training.lr"  # these accept lists or mappings: not a load-time rejection
        _set(base, key, value)
        _yaml(cfg_path, base)
        return Case("config", f"{key}={value!r}", ["train", str(cfg_path), "--out", str(out)],
                    [key.split(".")[-1], str(value), "yok"], [out / "model"], d)
    if kind == "unknown-key":
        key = rng.choice(["trainin", "training.learning_rate", "model.size", "data.source", "lora.rank", "x.y.z"])
        _set(base, key, 1)
        _yaml(cfg_path, base)
        return Case("config", f"unknown {key}", ["train", str(cfg_path), "--out", str(out)], [key.split(".")[-1]], [out / "model"], d)
    if kind == "yaml":
        # (an empty or `null` file is a valid config meaning "all defaults": not a hostile input)
        content = rng.choice([b"- a\n- b\n", b"training: [\n", b"\xff\xfe\x00\x00", b"a: b: c", b"42",
                              b"training:\n  lr: 1e-3\n\tbad: tab", bytes(rng.getrandbits(8) for _ in range(100))])
        if rng.random() < 0.15:
            return Case("config", "missing config", ["train", str(d / "yok.yaml"), "--out", str(out)], ["yok.yaml"], [out / "model"], d)
        cfg_path.write_bytes(content)
        return Case("config", f"yaml {content[:12]!r}", ["train", str(cfg_path), "--out", str(out)], ["c.yaml"], [out / "model"], d)
    recipe = {
        "name": "fuzz",
        "model": base["model"],
        "tokenizer": base["tokenizer"],
        "defaults": {"training": base["training"]},
        "stages": [{"name": "cpt", "data": base["data"]}, {"name": "tune", "data": base["data"], "lora": {"enabled": True, "r": 4, "alpha": 8}}],
    }
    mutation = rng.choice(["stages-empty", "stage-no-name", "dup-names", "both-data-sft", "bad-name", "defaults-bad",
                           "stage-key", "sft-empty", "stages-not-list", "value"])
    if mutation == "stages-empty":
        recipe["stages"] = []
    elif mutation == "stage-no-name":
        recipe["stages"][0].pop("name")
    elif mutation == "dup-names":
        recipe["stages"][1]["name"] = "cpt"
    elif mutation == "both-data-sft":
        recipe["stages"][0]["sft"] = {"sources": ["x.jsonl"]}
    elif mutation == "bad-name":
        recipe["stages"][0]["name"] = rng.choice(["../kaçış", "a/b", " ", "İ"])
    elif mutation == "defaults-bad":
        recipe["defaults"] = rng.choice([[1], {"modle": {}}, {"training": 5}])
    elif mutation == "stage-key":
        recipe["stages"][1]["trainng"] = {}
    elif mutation == "sft-empty":
        recipe["stages"][1] = {"name": "sft", "sft": {"sources": []}}
    elif mutation == "stages-not-list":
        recipe["stages"] = {"cpt": {}}
    else:
        key = rng.choice(["lr", "batch_size", "max_steps", "grad_accum", "save_every"])
        recipe["stages"][1].setdefault("training", {})[key] = rng.choice(BAD_VALUES)
    path = _yaml(d / "r.yaml", recipe)
    return Case("config", f"recipe {mutation}", ["recipe", "check", str(path)],
                ["stage", "name", "defaults", "r.yaml", "training", "sft", "trainng"], [], d)


def evaldata_cases(fx: dict, d: Path, rng: random.Random) -> Case:
    task = rng.choice(["xcopa_tr", "sts_tr", "ironytr"])
    folder = d / "evaldata" / task
    folder.mkdir(parents=True)
    good = {"premise": "Kadın şemsiyesini açtı.", "choice1": "Yağmur yağmaya başladı.", "choice2": "Güneş doğdu.",
            "question": "cause", "label": 0, "idx": 1}
    kind = rng.choice(["missing-column", "label-range", "empty", "latin5", "utf16", "binary", "mixed", "all-bad", "not-json"])
    if task == "xcopa_tr":
        f = folder / "test.tr.jsonl"
        rows = [dict(good, idx=i) for i in range(4)]
        if kind == "missing-column":
            for r in rows:
                r.pop(rng.choice(["premise", "choice1", "label", "question"]))
        elif kind == "label-range":
            for r in rows:
                r["label"] = rng.choice([2, -1, "iki", None, 1.5, 10**9])
        elif kind in ("mixed", "all-bad"):
            rows[1] = {"premise": 5}
            if kind == "all-bad":
                rows = [{"x": 1}] * 3
        text = "\n".join(json.dumps(r, ensure_ascii=False) for r in rows) + "\n"
    elif task == "sts_tr":
        f = folder / "sts-test-tr.csv"
        text = "score,sentence1,sentence2\n4.2,Ankara başkenttir.,Başkent Ankara'dır.\n1.0,Kedi uyudu.,Hava yağmurlu.\n"
        if kind == "missing-column":
            text = "sentence1\nAnkara\n"
        elif kind == "label-range":
            text = text.replace("4.2", rng.choice(["-3", "99", "beş", ""]))
        elif kind in ("mixed", "all-bad"):
            text += "tek hücre\n" if kind == "mixed" else ""
            if kind == "all-bad":
                text = "a,b\n1\n2\n"
    else:
        f = folder / "ironic.txt"
        text = "Harika, yine yağmur yağıyor.\nNe güzel, otobüs yine gecikti.\n"
        (folder / "non-ironic.txt").write_text("Bugün hava güneşli.\n", encoding="utf-8")
        if kind == "missing-column":
            (folder / "non-ironic.txt").unlink()
    data = text.encode("utf-8")
    if kind == "empty":
        data = b""
    elif kind == "latin5":
        data = text.encode("iso8859_9", errors="replace")
    elif kind == "utf16":
        data = text.encode("utf-16")
    elif kind == "binary":
        data = bytes(rng.getrandbits(8) for _ in range(rng.randint(1, 3000)))
    elif kind == "not-json" and f.suffix == ".jsonl":
        data = b"{premise: 'x'}\n"
    f.write_bytes(data)
    output = d / "results.json"
    return Case("evaldata", f"{task} {kind}",
                ["eval", str(fx["model"]), "--tasks", task, "--data-dir", str(d / "evaldata"), "--limit", "3",
                 "--samples", "2", "--batch-size", "8", "--quiet", "--output", str(output)],
                [f.name, task, "split", "items", "rows"], [], d)


def checkpoint_cases(fx: dict, d: Path, rng: random.Random) -> Case:
    m = d / "model"
    shutil.copytree(fx["model"], m)
    kind = rng.choice(["truncated-safetensors", "other-arch", "no-mask-token", "config-garbage", "config-empty",
                       "no-tokenizer", "no-weights", "settings-garbage", "settings-schedule", "empty-dir", "a-file",
                       "random-weights-bytes", "vocab-mismatch", "resume-truncated"])
    st = m / "model.safetensors"
    if kind == "truncated-safetensors":
        data = st.read_bytes()
        st.write_bytes(data[: rng.randint(0, len(data) - 1)])
    elif kind == "other-arch":
        cfg = json.loads((m / "config.json").read_text())
        cfg.update(rng.choice([{"model_type": "gpt2", "architectures": ["GPT2LMHeadModel"]},
                               {"model_type": "llama", "architectures": ["LlamaForCausalLM"]},
                               {"model_type": "t5", "architectures": ["T5ForConditionalGeneration"]}]))
        (m / "config.json").write_text(json.dumps(cfg))
    elif kind == "no-mask-token":
        tj = json.loads((m / "tokenizer.json").read_text())
        tj["added_tokens"] = [t for t in tj["added_tokens"] if "mask" not in t["content"].lower()]
        (m / "tokenizer.json").write_text(json.dumps(tj))
        tc = json.loads((m / "tokenizer_config.json").read_text())
        tc.pop("mask_token", None)
        tc["added_tokens_decoder"] = {k: v for k, v in tc.get("added_tokens_decoder", {}).items() if "mask" not in v["content"].lower()}
        (m / "tokenizer_config.json").write_text(json.dumps(tc))
    elif kind == "config-garbage":
        (m / "config.json").write_bytes(rng.choice([b"{", b"[]", b"\xff\xfe", b'{"model_type": 5}']))
    elif kind == "config-empty":
        (m / "config.json").write_text("{}")
    elif kind == "no-tokenizer":
        for f in m.glob("tokenizer*"):
            f.unlink()
        (m / "special_tokens_map.json").unlink(missing_ok=True)
    elif kind == "no-weights":
        st.unlink()
    elif kind == "settings-garbage":
        (m / "diffusion_config.json").write_bytes(rng.choice([b"{", b"[1]", b'{"schedule": 5}', b'{"mask_token_id": "x"}']))
    elif kind == "settings-schedule":
        (m / "diffusion_config.json").write_text(json.dumps({"schedule": {"name": "yok"}, "mask_token_id": 4}))
    elif kind == "empty-dir":
        shutil.rmtree(m)
        m.mkdir()
    elif kind == "a-file":
        shutil.rmtree(m)
        m.write_text("not a model")
    elif kind == "random-weights-bytes":
        st.write_bytes(bytes(rng.getrandbits(8) for _ in range(rng.randint(1, 4000))))
    elif kind == "vocab-mismatch":
        cfg = json.loads((m / "config.json").read_text())
        cfg["vocab_size"] = 50
        (m / "config.json").write_text(json.dumps(cfg))
    elif kind == "resume-truncated":
        return _resume_case(fx, d, rng)
    return Case("checkpoint", kind, ["generate", str(m), "--prompt", "Ankara", "--max-new-tokens", "2", "--steps", "1"],
                [str(m), "model", "config", "tokenizer", "safetensors", "mask"], [], d)


def _resume_case(fx: dict, d: Path, rng: random.Random) -> Case:
    """A run folder whose newest checkpoint is damaged: resume falls back to the one before, or says why."""
    from diffutron.cli import main as cli

    cfg = json.loads(json.dumps(fx["base"]))
    cfg["training"].update(max_steps=2, save_every=1, keep_last=3)
    path = _yaml(d / "c.yaml", cfg)
    out = d / "run"
    with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(io.StringIO()):
        cli(["train", str(path), "--out", str(out), "--max-steps", "1"])
    victims = sorted((out / "checkpoints").iterdir())
    victim = victims[-1] / rng.choice(["model.safetensors", "optimizer.bin", "trainer_state.json", "random_states_0.pkl"])
    victim.write_bytes(victim.read_bytes()[: rng.randint(0, 50)])
    return Case("checkpoint", f"resume truncated {victim.name}", ["train", str(path), "--out", str(out), "--resume"],
                [str(victims[-1]), "checkpoint"], [], d)


GENERATORS: dict[str, Callable] = {
    "corpus": corpus_cases,
    "config": config_cases,
    "prompt": prompt_cases,
    "evaldata": evaldata_cases,
    "checkpoint": checkpoint_cases,
}


# --- running and judging ---------------------------------------------------------------------------


def _leftovers(d: Path | None) -> list[str]:
    if d is None or not d.exists():
        return []
    return [str(p) for p in d.rglob("*") if ".tmp" in p.name or ".raw-" in p.name or ".old-" in p.name]


class CaseTimeout(BaseException):  # noqa: N818 - not an error the CLI may catch: a BaseException
    pass


def run_case(case: Case, timeout_s: int = 120) -> Outcome:
    from diffutron.cli import main as cli

    out, err = io.StringIO(), io.StringIO()
    t0 = time.perf_counter()
    escaped = None

    def alarm(signum, frame):
        raise CaseTimeout

    old = signal.signal(signal.SIGALRM, alarm)
    signal.alarm(timeout_s)
    try:
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
            rc = cli(case.argv)
    except SystemExit as exc:  # argparse usage errors: a clean message on stderr
        rc = exc.code if isinstance(exc.code, int) else 2
    except CaseTimeout:
        return Outcome(case, "FAIL-timeout", f"no answer within {timeout_s} s", time.perf_counter() - t0)
    except BaseException:  # noqa: BLE001 - an escaped exception is exactly what this suite looks for
        escaped = traceback.format_exc()
        rc = -1
    finally:
        signal.alarm(0)
        signal.signal(signal.SIGALRM, old)
    seconds = time.perf_counter() - t0
    text = err.getvalue()
    if escaped:
        return Outcome(case, "FAIL-traceback", escaped[-1500:], seconds)
    left = _leftovers(case.workdir)
    written = [str(p) for p in case.must_not_exist if p.exists()] if rc else []
    if left or written:
        return Outcome(case, "FAIL-half-written", f"left behind: {left + written}", seconds)
    if rc == 0:
        return Outcome(case, "ok", "", seconds)
    lines = [ln for ln in text.splitlines() if "error:" in ln]
    if "Traceback" in text or not lines:
        return Outcome(case, "FAIL-silent" if not lines else "FAIL-traceback", text[-1500:], seconds)
    message = lines[-1]
    if case.names and not any(n.lower() in text.lower() for n in case.names if n):
        return Outcome(case, "FAIL-unnamed", message, seconds)
    return Outcome(case, "error", message, seconds)


def make_cases(fx: dict, scratch: Path, n: int, seed: int, families=FAMILIES, big: bool = False):
    """``n`` cases spread over ``families`` (round-robin), each in its own folder; a generator."""
    rng = random.Random(seed)
    for i in range(n):
        fam = families[i % len(families)]
        d = scratch / f"case-{i:05d}"
        d.mkdir(parents=True)
        gen = GENERATORS[fam]
        yield gen(fx, d, rng, big) if fam == "corpus" else gen(fx, d, rng)


def fuzz(
    n: int,
    seed: int = 0,
    families=FAMILIES,
    big: bool = False,
    scratch: Path | None = None,
    progress: bool = True,
    quick: bool = False,
    minutes: float | None = None,
):
    """Run ``n`` generated cases; returns the list of outcomes. ``quick`` (the CI form) keeps config
    cases to values rejected at load time, so no case trains."""
    import logging

    import torch

    logging.disable(logging.WARNING)  # the library's warnings go to stderr; only the CLI's errors count
    # One thread: the fixture model is tiny, and two threads waiting on each other made a 20 KB
    # perplexity case take 19 s instead of 1 s on a busy 2-core machine.
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    own = scratch is None
    scratch = Path(tempfile.mkdtemp(prefix="fuzz-")) if own else scratch
    try:
        fx = build_fixture(scratch / "fixture")
        fx["quick"] = quick
        outcomes = []
        t_end = time.monotonic() + minutes * 60 if minutes else None
        for case in make_cases(fx, scratch / "cases", n, seed, families, big):
            if t_end is not None and time.monotonic() > t_end:
                print(f"  time budget reached after {len(outcomes)} of {n} cases", file=sys.stderr)
                break
            o = run_case(case)
            outcomes.append(o)
            if progress and len(outcomes) % 25 == 0:
                print(f"  {len(outcomes)}/{n} cases", file=sys.stderr, flush=True)
            shutil.rmtree(scratch / "cases" / f"case-{len(outcomes) - 1:05d}", ignore_errors=True)
        return outcomes
    finally:
        logging.disable(logging.NOTSET)
        torch.set_num_threads(threads)
        if own:
            shutil.rmtree(scratch, ignore_errors=True)


def summarize(outcomes: list[Outcome]) -> str:
    counts = Counter((o.case.family, o.kind) for o in outcomes)
    kinds = sorted({k for _, k in counts})
    lines = [f"{'family':<12}" + "".join(f"{k:>20}" for k in kinds) + f"{'cases':>8}{'s/case':>8}"]
    for fam in FAMILIES:
        total = sum(v for (f, _), v in counts.items() if f == fam)
        if total:
            secs = sum(o.seconds for o in outcomes if o.case.family == fam) / total
            lines.append(
                f"{fam:<12}" + "".join(f"{counts.get((fam, k), 0):>20}" for k in kinds) + f"{total:>8}{secs:>8.2f}"
            )
    lines.append(f"{'all':<12}" + "".join(f"{sum(v for (_, k2), v in counts.items() if k2 == k):>20}" for k in kinds)
                 + f"{len(outcomes):>8}")
    return "\n".join(lines)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--cases", type=int, default=1000)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--families", default=",".join(FAMILIES))
    ap.add_argument("--big", action="store_true", help="the huge-line corpus at 50 MB (default 2 MB)")
    ap.add_argument("--minutes", type=float, help="stop generating cases after this long (a shared machine)")
    ap.add_argument("--quick", action="store_true", help="the CI form: config values rejected at load time only")
    ap.add_argument("--show-failures", type=int, default=20, help="print this many failures in full")
    ap.add_argument("--show-errors", type=int, default=0, help="print this many clean error messages")
    args = ap.parse_args()
    t0 = time.perf_counter()
    outcomes = fuzz(
        args.cases, args.seed, tuple(args.families.split(",")), args.big, quick=args.quick, minutes=args.minutes
    )
    print(summarize(outcomes))
    fails = [o for o in outcomes if o.kind.startswith("FAIL")]
    for o in fails[: args.show_failures]:
        print(f"\n--- {o.kind}: [{o.case.family}] {o.case.name}\n    argv: {o.case.argv}\n{o.message}")
    for o in [o for o in outcomes if o.kind == "error"][: args.show_errors]:
        print(f"[{o.case.family}] {o.case.name}: {o.message}")
    print(f"\n{len(outcomes)} cases, {len(fails)} failures, {time.perf_counter() - t0:.0f} s")
    return 1 if fails else 0


if __name__ == "__main__":
    sys.exit(main())
