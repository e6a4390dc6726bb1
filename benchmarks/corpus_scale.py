"""Multi-GB corpora: streaming keeps memory flat, tokenisation runs in parallel workers.

    python benchmarks/corpus_scale.py [--marks 100,500,1000,2000] [--slice 100] [--dir /tmp/corpus-scale]

1. writes a Turkish-like corpus of ``max(--marks)`` MB on disk, one document per line: the embedded
   corpus's documents when installed (else documents of the shared Turkish sentences), perturbed with
   a seeded generator (word swaps, digits, case changes) into a pool of ``--pool`` MB, and the pool
   repeated with a running number before each line so no two documents are identical;
2. streams the whole corpus, in a fresh process, through the training data path (``iter_documents``
   -> tokenizer -> ``build_blocks`` writing its ``.npy`` cache) and reports resident memory (peak so
   far ``VmHWM``, current ``VmRSS``, anonymous ``RssAnon``) as the reader passes each mark: memory must
   not grow with the corpus. This long stream uses a word-level tokenizer (``--stream-tokenizer
   word``, trained on the pool): the byte-level BPE one tokenises ~2 MB/s on two cores here, so 2 GB
   would take a quarter of an hour; ``--stream-tokenizer bpe`` streams with the BPE one instead;
3. streams the first ``--slice`` MB with the byte-level BPE tokenizer (8k, trained on the pool), once
   with one tokenisation worker and once with N (the ``tokenizers`` thread pool, ``RAYON_RS_NUM_CPUS``),
   each in a fresh process: MB/s, the parallel speed-up, and memory at its marks too.
The corpus is deleted afterwards unless ``--keep``. Speeds depend on what else the machine runs:
say so next to any number.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import shutil
import subprocess
import sys
import threading
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))  # the shared sentence list beside this script
from turkish_sentences import SENTENCES  # noqa: E402


def seed_documents() -> list[str]:
    try:
        from diffutron.data.corpus import embedded_documents

        return [d for d in embedded_documents() if d.strip()]
    except Exception:  # noqa: BLE001 - the optional corpus package is missing: our own sentences
        rng = random.Random(0)
        return [" ".join(rng.choice(SENTENCES) for _ in range(rng.randint(3, 30))) for _ in range(400)]


def perturb(doc: str, rng: random.Random) -> str:
    words = doc.split()
    for _ in range(max(1, len(words) // 20)):
        i, j = rng.randrange(len(words)), rng.randrange(len(words))
        words[i], words[j] = words[j], words[i]
    k = rng.randrange(len(words))
    words[k] = rng.choice([words[k].upper(), words[k].lower(), f"{rng.randint(1, 9999)}", words[k]])
    return " ".join(words)


def make_pool(mb: int, seed: int = 0) -> list[bytes]:
    """About ``mb`` MB of perturbed documents, one UTF-8 line each."""
    rng = random.Random(seed)
    docs = [d.replace("\n", " ") for d in seed_documents()]
    pool, size = [], 0
    while size < mb << 20:
        line = (perturb(rng.choice(docs), rng) + "\n").encode("utf-8")
        pool.append(line)
        size += len(line)
    return pool


def write_corpus(path: Path, mb: int, pool: list[bytes]) -> int:
    """A corpus of about ``mb`` MB: the pool again and again, each line led by its running number
    (cheap: perturbing every document of a 2 GB corpus would take longer than tokenising it)."""
    target, written, n = mb << 20, 0, 0
    with path.open("wb", buffering=8 << 20) as fh:
        while written < target:
            for line in pool:
                n += 1
                head = b"%d. " % n
                fh.write(head)
                fh.write(line)
                written += len(head) + len(line)
                if written >= target:
                    break
    return written


def word_tokenizer(pool: list[bytes]):
    """A word-level tokenizer (NFC, split at whitespace, 50k words of the pool, <unk> for the rest)."""
    from tokenizers import Tokenizer, models, normalizers, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.WordLevel(unk_token="<unk>"))
    tok.normalizer = normalizers.NFC()
    tok.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    trainer = trainers.WordLevelTrainer(vocab_size=50_000, special_tokens=["<unk>", "<bos>", "<eos>"],
                                        show_progress=False)
    tok.train_from_iterator((line.decode("utf-8") for line in pool), trainer)
    return PreTrainedTokenizerFast(tokenizer_object=tok, unk_token="<unk>", bos_token="<bos>", eos_token="<eos>")


def _status() -> dict[str, int]:
    """Resident memory fields of this process in MB, and bytes read so far (``rchar``)."""
    out = {}
    for ln in Path("/proc/self/status").read_text().splitlines():
        key, _, val = ln.partition(":")
        if key in ("VmHWM", "VmRSS", "RssAnon", "RssFile"):
            out[key] = int(val.split()[0]) // 1024
    out["rchar"] = next(int(ln.split()[1]) for ln in Path("/proc/self/io").read_text().splitlines()
                        if ln.startswith("rchar"))
    return out


def worker(corpus: Path, tokenizer_dir: Path, cache: Path, marks_mb: list[int]) -> dict:
    """In a fresh process: stream ``corpus`` into packed blocks; memory at each mark, time, counts."""
    from transformers import AutoTokenizer

    from diffutron.data import DataReport, build_blocks, iter_documents

    tok = AutoTokenizer.from_pretrained(tokenizer_dir)
    report = DataReport()
    start = _status()
    pending = sorted(m for m in marks_mb if m << 20 <= corpus.stat().st_size * 1.001)
    rows, done = [], threading.Event()
    t0 = time.perf_counter()

    def watch() -> None:  # bytes read since start (the corpus is all this process reads) -> marks
        while pending and not done.wait(0.05):
            now = _status()
            if now["rchar"] - start["rchar"] >= pending[0] << 20:
                rows.append({"mark_mb": pending.pop(0), "seconds": time.perf_counter() - t0, **now})

    watcher = threading.Thread(target=watch, daemon=True)
    watcher.start()
    blocks = build_blocks(iter_documents(str(corpus), report), tok, 128, cache_path=cache, progress=False)
    secs = time.perf_counter() - t0
    done.set()
    watcher.join()
    end = _status()
    mb = corpus.stat().st_size / 2**20
    return {"mb": mb, "seconds": secs, "mb_per_s": mb / secs, "blocks": int(len(blocks)),
            "documents": report.documents, "after_load": start, "marks": rows, "end": end}


def run_worker(corpus: Path, tokenizer_dir: Path, cache: Path, marks: list[int], threads: int | None) -> dict:
    env = dict(os.environ, TOKENIZERS_PARALLELISM="true")
    if threads:
        env["RAYON_RS_NUM_CPUS"] = str(threads)
    cache.unlink(missing_ok=True)
    cmd = [sys.executable, __file__, "--worker", str(corpus), str(tokenizer_dir), str(cache),
           ",".join(map(str, marks))]
    out = subprocess.run(cmd, capture_output=True, text=True, env=env)
    lines = [ln for ln in out.stdout.splitlines() if ln.startswith("RESULT ")]
    if out.returncode or not lines:
        raise RuntimeError(out.stderr[-3000:])
    cache.unlink(missing_ok=True)
    return json.loads(lines[-1][7:])


def show(label: str, r: dict) -> None:
    print(f"{label}: {r['mb']:.0f} MB, {r['documents']:,} documents -> {r['blocks']:,} blocks of 128 in "
          f"{r['seconds']:.0f} s = {r['mb_per_s']:.2f} MB/s", flush=True)
    a = r["after_load"]
    print(f"  {'read':>8} {'s':>6} {'VmHWM MB':>9} {'VmRSS MB':>9} {'RssAnon MB':>11} {'RssFile MB':>11}")
    print(f"  {'loaded':>8} {0:6.0f} {a['VmHWM']:9} {a['VmRSS']:9} {a['RssAnon']:11} {a['RssFile']:11}")
    for m in r["marks"]:
        print(f"  {m['mark_mb']:6} MB {m['seconds']:6.0f} {m['VmHWM']:9} {m['VmRSS']:9} {m['RssAnon']:11} "
              f"{m['RssFile']:11}")
    e = r["end"]
    print(f"  {'end':>8} {r['seconds']:6.0f} {e['VmHWM']:9} {e['VmRSS']:9} {e['RssAnon']:11} {e['RssFile']:11}")
    if len(r["marks"]) > 1:
        first, peaks = r["marks"][0], [m["VmHWM"] for m in r["marks"]] + [e["VmHWM"]]
        print(f"  peak RSS from the {first['mark_mb']} MB mark to the end: {first['VmHWM']} -> {e['VmHWM']} MB "
              f"({e['VmHWM'] / first['VmHWM'] - 1:+.1%}); largest over smallest peak "
              f"{max(peaks) / min(peaks) - 1:+.1%}", flush=True)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--marks", default="100,500,1000,2000", help="MB read at which memory is reported; "
                    "the largest is the corpus size")
    ap.add_argument("--slice", type=int, default=100, help="MB tokenised with 1 and N workers (BPE)")
    ap.add_argument("--workers", default="1,2", help="tokenisation worker counts compared on the slice")
    ap.add_argument("--stream-tokenizer", choices=("word", "bpe"), default="word")
    ap.add_argument("--pool", type=int, default=16, help="MB of perturbed documents the corpus repeats")
    ap.add_argument("--dir", default="/tmp/corpus-scale")
    ap.add_argument("--keep", action="store_true")
    ap.add_argument("--worker", nargs=4, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.worker:
        corpus, tok, cache, marks = args.worker
        print("RESULT " + json.dumps(worker(Path(corpus), Path(tok), Path(cache), [int(m) for m in marks.split(",")])))
        return 0
    root = Path(args.dir)
    root.mkdir(parents=True, exist_ok=True)
    from diffutron.text.tokenizer import train_tokenizer

    marks = sorted(int(m) for m in args.marks.split(","))
    result: dict = {}
    try:
        t0 = time.perf_counter()
        pool = make_pool(args.pool)
        bpe_dir, word_dir = root / "bpe", root / "word"
        train_tokenizer([ln.decode("utf-8") for ln in pool[:300]], vocab_size=8000).save_pretrained(bpe_dir)
        word_tokenizer(pool).save_pretrained(word_dir)
        corpus, part = root / f"corpus-{marks[-1]}mb.txt", root / f"slice-{args.slice}mb.txt"
        size = write_corpus(corpus, marks[-1], pool)
        write_corpus(part, args.slice, pool)  # the same generator: the corpus's first --slice MB
        result["generate_seconds"] = gen_s = time.perf_counter() - t0
        print(f"generated {size / 2**20:.0f} MB (+ the {args.slice} MB slice) and two tokenizers in {gen_s:.0f} s",
              flush=True)
        stream_dir = word_dir if args.stream_tokenizer == "word" else bpe_dir
        result["stream"] = r = run_worker(corpus, stream_dir, root / "blocks.npy", marks, 2)
        show(f"stream ({args.stream_tokenizer} tokenizer, 2 workers)", r)
        corpus.unlink()  # disk: the slice is all that is needed from here on
        result["slice"] = {}
        for w in (int(x) for x in args.workers.split(",")):
            result["slice"][w] = r = run_worker(part, bpe_dir, root / "blocks.npy", sorted({100, args.slice}), w)
            show(f"slice (byte-level BPE 8k, {w} worker(s))", r)
    finally:
        if not args.keep:
            shutil.rmtree(root, ignore_errors=True)
    speeds = {w: r["mb_per_s"] for w, r in result["slice"].items()}
    ws = sorted(speeds)
    if len(ws) > 1:
        print(f"parallel tokenisation on the {args.slice} MB slice: {ws[-1]} workers {speeds[ws[-1]]:.2f} MB/s vs "
              f"{ws[0]} {speeds[ws[0]]:.2f} MB/s = {speeds[ws[-1]] / speeds[ws[0]]:.2f}x")
    print("RESULT_JSON " + json.dumps(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
