"""Multi-GB corpora: streaming keeps memory flat, tokenisation runs in parallel workers.

    python benchmarks/corpus_scale.py [--sizes 100,500,2000] [--workers 1,2] [--dir /tmp/corpus-scale]

1. writes Turkish-like corpora of each size (MB) on disk: the embedded corpus's documents when
   installed (else a few Turkish sentences), repeated with seeded perturbations (word swaps, digits,
   case changes) so no two documents are identical;
2. for each size, in a fresh process: streams it through the training data path
   (``iter_documents`` -> tokenizer -> ``build_blocks`` writing a memory-mapped cache) and reports
   peak resident memory (``VmHWM``), MB/s and blocks; memory should not grow with the corpus;
3. on the smallest size, the same with 1 and with N tokenisation workers (the ``tokenizers``
   thread pool, ``RAYON_RS_NUM_CPUS``) in separate processes: the parallel speed-up.
A BPE tokenizer (8k) is trained once on the first documents. The corpora are deleted afterwards
unless ``--keep``. Speeds depend on what else the machine runs: say so next to any number.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import shutil
import subprocess
import sys
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


def write_corpus(path: Path, mb: int, seed: int = 0) -> int:
    """A .txt corpus of about ``mb`` MB (one document per line); returns its size in bytes."""
    rng = random.Random(seed)
    docs = [d.replace("\n", " ") for d in seed_documents()]
    target, written = mb << 20, 0
    with path.open("w", encoding="utf-8") as fh:
        while written < target:
            line = perturb(rng.choice(docs), rng) + "\n"
            fh.write(line)
            written += len(line.encode("utf-8"))
    return written


def worker(corpus: Path, tokenizer_dir: Path, cache: Path) -> dict:
    """In a fresh process: stream ``corpus`` into packed blocks; memory, time, counts."""
    import threading

    from transformers import AutoTokenizer

    from diffutron.data import DataReport, build_blocks, iter_documents

    tok = AutoTokenizer.from_pretrained(tokenizer_dir)
    report = DataReport()
    peak_anon, done = [0], threading.Event()

    def sample() -> None:  # anonymous memory (heap): file pages of the memory-mapped cache are not counted
        while not done.wait(0.05):
            peak_anon[0] = max(peak_anon[0], _status_kb("RssAnon"))

    watcher = threading.Thread(target=sample, daemon=True)
    watcher.start()
    t0 = time.perf_counter()
    blocks = build_blocks(iter_documents(str(corpus), report), tok, 128, cache_path=cache, progress=False)
    secs = time.perf_counter() - t0
    done.set()
    watcher.join()
    hwm = next(int(ln.split()[1]) for ln in Path("/proc/self/status").read_text().splitlines() if ln.startswith("VmHWM"))
    return {"mb": corpus.stat().st_size / 2**20, "seconds": secs, "mb_per_s": corpus.stat().st_size / 2**20 / secs,
            "blocks": int(len(blocks)), "documents": report.documents, "peak_rss_mb": hwm / 1024,
            "peak_anon_mb": peak_anon[0] / 1024}


def _status_kb(field: str) -> int:
    return next(int(ln.split()[1]) for ln in Path("/proc/self/status").read_text().splitlines() if ln.startswith(field))


def run_worker(corpus: Path, tokenizer_dir: Path, cache: Path, threads: int | None) -> dict:
    env = dict(os.environ, TOKENIZERS_PARALLELISM="true")
    if threads:
        env["RAYON_RS_NUM_CPUS"] = str(threads)
    cache.unlink(missing_ok=True)
    out = subprocess.run([sys.executable, __file__, "--worker", str(corpus), str(tokenizer_dir), str(cache)],
                         capture_output=True, text=True, env=env)
    lines = [ln for ln in out.stdout.splitlines() if ln.startswith("RESULT ")]
    if out.returncode or not lines:
        raise RuntimeError(out.stderr[-3000:])
    cache.unlink(missing_ok=True)
    return json.loads(lines[-1][7:])


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--sizes", default="100,500,2000", help="corpus sizes in MB")
    ap.add_argument("--workers", default="1,2", help="tokenisation worker counts compared on the smallest size")
    ap.add_argument("--dir", default="/tmp/corpus-scale")
    ap.add_argument("--keep", action="store_true")
    ap.add_argument("--worker", nargs=3, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.worker:
        print("RESULT " + json.dumps(worker(*map(Path, args.worker))))
        return 0
    root = Path(args.dir)
    root.mkdir(parents=True, exist_ok=True)
    from diffutron.text.tokenizer import train_tokenizer

    tok_dir = root / "tokenizer"
    train_tokenizer(seed_documents()[:300], vocab_size=8000).save_pretrained(tok_dir)
    sizes = [int(s) for s in args.sizes.split(",")]
    rows = []
    try:
        for mb in sizes:
            corpus = root / f"corpus-{mb}mb.txt"
            t0 = time.perf_counter()
            write_corpus(corpus, mb)
            gen_s = time.perf_counter() - t0
            r = run_worker(corpus, tok_dir, root / "blocks.npy", None)
            r["generate_seconds"] = gen_s
            rows.append(r)
            print(f"{r['mb']:8.0f} MB: {r['documents']:>10,} documents -> {r['blocks']:>10,} blocks of 128, "
                  f"{r['mb_per_s']:6.2f} MB/s, peak RSS {r['peak_rss_mb']:7.0f} MB "
                  f"(anonymous {r.get('peak_anon_mb', 0):6.0f} MB)", flush=True)
            if mb != sizes[0]:
                corpus.unlink()
        small = root / f"corpus-{sizes[0]}mb.txt"
        speeds = {}
        for w in (int(x) for x in args.workers.split(",")):
            speeds[w] = run_worker(small, tok_dir, root / "blocks.npy", w)["mb_per_s"]
            print(f"{w} tokenisation worker(s) on {sizes[0]} MB: {speeds[w]:.2f} MB/s", flush=True)
    finally:
        if not args.keep:
            shutil.rmtree(root, ignore_errors=True)
    peaks = [r["peak_rss_mb"] for r in rows]
    print(f"peak RSS from {rows[0]['mb']:.0f} MB to {rows[-1]['mb']:.0f} MB: {peaks[0]:.0f} -> {peaks[-1]:.0f} MB "
          f"({peaks[-1] / peaks[0] - 1:+.1%}; max spread {max(peaks) / min(peaks) - 1:.1%})")
    ws = sorted(speeds)
    if len(ws) > 1:
        print(f"parallel speed-up {ws[-1]} vs {ws[0]} worker(s): {speeds[ws[-1]] / speeds[ws[0]]:.2f}x")
    print(json.dumps({"sizes": rows, "workers_mb_per_s": speeds}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
