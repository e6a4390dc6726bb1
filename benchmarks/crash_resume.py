"""Crash torture: kill -9 a training run at random moments, resume it, and demand the same result.

    python benchmarks/crash_resume.py [--kills 10] [--steps 30] [--recipe-kills 4] [--seed 0] [--workdir DIR]

What it does:
  1. writes a small Turkish corpus and a micro-model config (and a two-stage recipe: LoRA
     pre-training, then full tuning) into a scratch folder;
  2. trains them once without interruption: the reference;
  3. starts ``diffutron train CONFIG --resume`` again and again, each time killing it with SIGKILL at
     a random moment of one of these kinds: during start-up (imports, tokenizer, data), at a random
     training step, *inside a checkpoint write* (the test hook ``DIFFUTRON_TEST_SLOW_CHECKPOINT_S``
     stretches the write so the kill lands in it; the script waits for the ``.step-*.tmp`` folder),
     and in the final phase (last checkpoint written, model being saved);
  4. after every kill, checks that every ``step-*`` checkpoint on disk loads (weights, optimiser,
     trainer state); leftovers of an interrupted write must be removed with a message on the next start;
  5. lets the last attempt finish, then compares: final weights bit-identical to the reference,
     ``metrics.jsonl`` with every training step exactly once and the same losses;
  6. the same for ``diffutron run RECIPE --resume`` with kills during a stage, in the final phase of
     the LoRA stage (evaluation, LoRA merge, model save) and in the hand-over to the next stage.

Prints one line per attempt and a summary; exits 1 if any check failed. ``tests/test_crash_resume.py``
runs a reduced version (two kills). Everything runs on the CPU (bit-identity holds there).
"""

from __future__ import annotations

import argparse
import json
import os
import random
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))  # the shared sentence list beside this script
from turkish_sentences import SENTENCES  # noqa: E402

MICRO = "{hidden_size: 64, num_hidden_layers: 2, num_attention_heads: 2, intermediate_size: 128}"
SLOW_ENV = "DIFFUTRON_TEST_SLOW_CHECKPOINT_S"
KINDS = ("startup", "step", "checkpoint", "final")
RECIPE_KINDS = ("stage", "merge", "handover")


def write_setup(root: Path, steps: int, save_every: int = 2) -> tuple[Path, Path]:
    """Corpus, a train config and a two-stage recipe under ``root``; returns (config, recipe)."""
    root.mkdir(parents=True, exist_ok=True)
    rng = random.Random(0)
    docs = [" ".join(rng.choice(SENTENCES) for _ in range(rng.randint(1, 4))) for _ in range(160)]
    corpus = root / "corpus.txt"
    corpus.write_text("\n".join(docs) + "\n", encoding="utf-8")
    training = (
        f"{{max_steps: {steps}, batch_size: 8, eval_every: 4, eval_blocks: 8, eval_t_samples: 2, "
        f"save_every: {save_every}, keep_last: 2, log_every: 1, warmup_steps: 2, precision: 'no'}}"
    )
    config = root / "train.yaml"
    config.write_text(
        f"model: {{preset: tiny, overrides: {MICRO}}}\n"
        "tokenizer: {vocab_size: 400}\n"
        f"data: {{sources: ['{corpus}'], block_size: 32, val_fraction: 0.05}}\n"
        f"training: {training}\n",
        encoding="utf-8",
    )
    recipe = root / "recipe.yaml"
    recipe.write_text(
        "name: torture\n"
        f"model: {{preset: tiny, overrides: {MICRO}}}\n"
        "tokenizer: {vocab_size: 400}\n"
        f"defaults: {{data: {{sources: ['{corpus}'], block_size: 32, val_fraction: 0.05}}, training: {training}}}\n"
        "stages:\n"
        "  - {name: cpt, data: {}, lora: {enabled: true, r: 4, alpha: 8, target_modules: [Wqkv, Wo, Wi]}}\n"
        "  - {name: tune, data: {}}\n",
        encoding="utf-8",
    )
    return config, recipe


def _cmd(*args: str) -> list[str]:
    return [sys.executable, "-m", "diffutron.cli", *args]


def run_to_end(args: list[str], log: Path, env: dict | None = None) -> subprocess.CompletedProcess:
    with log.open("w") as fh:
        proc = subprocess.run(_cmd(*args), stdout=fh, stderr=subprocess.STDOUT, env=env, timeout=1800)
    if proc.returncode != 0:
        raise RuntimeError(f"{' '.join(args)} failed ({proc.returncode}); see {log}:\n{log.read_text()[-3000:]}")
    return proc


def train_steps_logged(metrics: Path) -> int:
    """The largest training step in metrics.jsonl (a cut-off last line is ignored)."""
    best = 0
    if metrics.exists():
        for ln in metrics.read_text(encoding="utf-8").splitlines():
            try:
                row = json.loads(ln)
            except json.JSONDecodeError:
                continue
            if row.get("kind") == "train":
                best = max(best, row["step"])
    return best


def check_checkpoints(root: Path) -> tuple[int, list[str], list[str]]:
    """(loadable checkpoints, leftover names, problems) of one checkpoints/ folder."""
    from safetensors.torch import load_file

    ok, leftovers, problems = 0, [], []
    if not root.exists():
        return 0, [], []
    for p in sorted(root.iterdir()):
        if p.name.startswith("."):
            leftovers.append(p.name)
            continue
        try:
            json.loads((p / "trainer_state.json").read_text(encoding="utf-8"))
            load_file(str(p / "model.safetensors"))
            if not (p / "optimizer.bin").exists():
                raise FileNotFoundError("optimizer.bin")
            ok += 1
        except Exception as exc:  # noqa: BLE001 - anything unreadable is a failed check
            problems.append(f"{p}: {exc}")
    return ok, leftovers, problems


def same_weights(a: Path, b: Path) -> bool:
    import torch
    from safetensors.torch import load_file

    x, y = load_file(str(a / "model.safetensors")), load_file(str(b / "model.safetensors"))
    return x.keys() == y.keys() and all(torch.equal(x[k], y[k]) for k in x)


def metrics_problems(run: Path, ref: Path, steps: int) -> list[str]:
    def rows(p: Path) -> list[dict]:
        return [json.loads(ln) for ln in (p / "metrics.jsonl").read_text(encoding="utf-8").splitlines() if ln]

    got, want = rows(run), rows(ref)
    problems = []
    train = [r["step"] for r in got if r["kind"] == "train"]
    if train != list(range(1, steps + 1)):
        problems.append(f"{run}/metrics.jsonl: training steps {train}, expected 1..{steps} once each")
    evals = [r["step"] for r in got if r["kind"] == "eval"]
    if evals != [r["step"] for r in want if r["kind"] == "eval"] or len(set(evals)) != len(evals):
        problems.append(f"{run}/metrics.jsonl: validation steps {evals} differ from the reference's")
    loss = [r["loss"] for r in got if r["kind"] == "train"]
    if loss != [r["loss"] for r in want if r["kind"] == "train"]:
        problems.append(f"{run}/metrics.jsonl: training losses differ from the reference's")
    return problems


@dataclass
class Attempt:
    kind: str
    killed: bool
    at: str  # what the run was doing when killed
    seconds: float
    checkpoints_ok: int = 0
    leftovers: list[str] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)


def _entries(folder: Path, pattern: str) -> list[Path]:
    try:
        return list(folder.glob(pattern))
    except OSError:  # the folder is being renamed or pruned under us
        return []


def _mtime(p: Path) -> float:
    try:
        return p.stat().st_mtime
    except OSError:
        return 0.0


def _kill_when(proc: subprocess.Popen, ready, delay: float, timeout: float) -> str | None:
    """Poll until ``ready()`` returns a description, wait ``delay`` s, SIGKILL. None if the run ended first."""
    t0 = time.monotonic()
    while proc.poll() is None and time.monotonic() - t0 < timeout:
        what = ready()
        if what:
            time.sleep(delay)
            if proc.poll() is not None:
                return None
            os.kill(proc.pid, signal.SIGKILL)
            proc.wait()
            return what
        time.sleep(0.02)
    return None


def attempt_train(config: Path, out: Path, kind: str, rng: random.Random, steps: int, log: Path) -> Attempt:
    env = dict(os.environ)
    slow = 1.5
    if kind == "checkpoint":
        env[SLOW_ENV] = str(slow)
    ckpts, metrics = out / "checkpoints", out / "metrics.jsonl"
    done = train_steps_logged(metrics)
    # a step before the last, so that a checkpoint write (the last one at least) is still ahead for
    # a later attempt to hit
    target = rng.randint(min(done + 1, steps - 1), steps - 1)

    def ready() -> str | None:
        if kind == "startup":
            return "start-up"
        if kind == "step":
            s = train_steps_logged(metrics)
            return f"step {s}" if s >= target else None
        if kind == "checkpoint":  # a write of this attempt, not a leftover of the one before
            tmp = [p.name for p in _entries(ckpts, ".step-*.tmp") if _mtime(p) >= started]
            return f"writing {tmp[0]}" if tmp else None
        final = ckpts / f"step-{steps:06d}"
        return "final phase (last checkpoint written)" if final.exists() else None

    # a step of the toy model takes a few hundredths of a second on an idle machine: a longer delay
    # would let the run reach its end (and its last checkpoint) before the kill
    delay = {"startup": rng.uniform(1.0, 12.0), "checkpoint": rng.uniform(0.05, slow * 0.8)}.get(
        kind, rng.uniform(0.0, 0.05)
    )
    t0, started = time.monotonic(), time.time() - 1.0  # mtimes may be coarse
    with log.open("w") as fh:
        proc = subprocess.Popen(
            _cmd("train", str(config), "--out", str(out), "--resume"), stdout=fh, stderr=subprocess.STDOUT, env=env
        )
        at = _kill_when(proc, ready, delay, timeout=900)
        if at is None:
            proc.wait()
    a = Attempt(kind, at is not None, at or f"finished (rc {proc.returncode})", time.monotonic() - t0)
    a.checkpoints_ok, a.leftovers, a.problems = check_checkpoints(ckpts)
    return a


def attempt_recipe(recipe: Path, out: Path, kind: str, rng: random.Random, steps: int, log: Path) -> Attempt:
    first = out / "cpt"

    def ready() -> str | None:
        if kind == "stage":
            s = train_steps_logged(first / "metrics.jsonl")
            return f"stage cpt, step {s}" if s >= max(1, steps // 2) else None
        if kind == "merge":
            final = first / "checkpoints" / f"step-{steps:06d}"
            return "stage cpt, final phase (evaluation, LoRA merge, model save)" if final.exists() else None
        return "hand-over to stage tune" if (first / "summary.json").exists() else None

    delay = {"stage": rng.uniform(0.0, 0.5), "merge": rng.uniform(0.0, 1.5)}.get(kind, rng.uniform(0.0, 4.0))
    t0 = time.monotonic()
    with log.open("w") as fh:
        proc = subprocess.Popen(
            _cmd("run", str(recipe), "--out", str(out), "--resume"), stdout=fh, stderr=subprocess.STDOUT
        )
        at = _kill_when(proc, ready, delay, timeout=900)
        if at is None:
            proc.wait()
    a = Attempt(kind, at is not None, at or f"finished (rc {proc.returncode})", time.monotonic() - t0)
    for stage in ("cpt", "tune"):
        ok, left, problems = check_checkpoints(out / stage / "checkpoints")
        a.checkpoints_ok += ok
        a.leftovers += [f"{stage}/{x}" for x in left]
        a.problems += problems
    return a


def torture(
    workdir: Path,
    kills: int,
    steps: int,
    seed: int,
    recipe_kills: int = 0,
    kinds=KINDS,
    verbose: bool = True,
    reference_in_process: bool = False,
) -> dict:
    """Run the whole torture in ``workdir``; returns a report (``ok`` is the verdict).
    ``reference_in_process`` trains the reference in this process (saves a start-up; tests)."""
    rng = random.Random(seed)
    config, recipe = write_setup(workdir, steps)
    logs = workdir / "logs"
    logs.mkdir(exist_ok=True)
    say = print if verbose else (lambda *a, **k: None)
    report: dict = {"attempts": [], "recipe_attempts": [], "problems": []}

    t0 = time.monotonic()
    if reference_in_process:
        from diffutron.config import load_config
        from diffutron.training import train

        train(load_config(config), workdir / "ref", progress=False)
    else:
        run_to_end(["train", str(config), "--out", str(workdir / "ref")], logs / "ref.log")
    report["reference_seconds"] = time.monotonic() - t0
    say(f"reference run: {report['reference_seconds']:.0f} s")

    out = workdir / "tortured"
    plan = [kinds[i % len(kinds)] for i in range(kills)]
    rng.shuffle(plan)
    for i, kind in enumerate(plan):
        a = attempt_train(config, out, kind, rng, steps, logs / f"train-{i:02d}.log")
        report["attempts"].append(a.__dict__)
        report["problems"] += a.problems
        say(f"attempt {i + 1}: {kind:<10} killed={a.killed!s:<5} at {a.at:<40} "
            f"checkpoints ok {a.checkpoints_ok}, leftovers {a.leftovers}, problems {len(a.problems)}")
        if not a.killed:
            break
    final_log = logs / "train-final.log"
    run_to_end(["train", str(config), "--out", str(out), "--resume"], final_log)
    text = final_log.read_text()
    if any(a["leftovers"] for a in report["attempts"][-1:]) and "interrupted checkpoint write" not in text:
        report["problems"].append("leftovers of an interrupted write were not reported on resume")
    if not same_weights(out / "model", workdir / "ref" / "model"):
        report["problems"].append("final weights differ from the uninterrupted run")
    report["problems"] += metrics_problems(out, workdir / "ref", steps)
    report["kills"] = sum(a["killed"] for a in report["attempts"])
    report["kills_in_checkpoint_write"] = sum(
        a["killed"] and a["kind"] == "checkpoint" for a in report["attempts"]
    )

    if recipe_kills:
        t0 = time.monotonic()
        run_to_end(["run", str(recipe), "--out", str(workdir / "ref-recipe")], logs / "ref-recipe.log")
        say(f"reference recipe: {time.monotonic() - t0:.0f} s")
        rout = workdir / "tortured-recipe"
        for i in range(recipe_kills):
            kind = RECIPE_KINDS[i % len(RECIPE_KINDS)]
            if kind != "handover" and (rout / "cpt" / "summary.json").exists():
                kind = "handover"  # the first stage is done: only a later moment can still be hit
            a = attempt_recipe(recipe, rout, kind, rng, steps, logs / f"recipe-{i:02d}.log")
            report["recipe_attempts"].append(a.__dict__)
            report["problems"] += a.problems
            say(f"recipe attempt {i + 1}: {kind:<9} killed={a.killed!s:<5} at {a.at:<55} "
                f"checkpoints ok {a.checkpoints_ok}, problems {len(a.problems)}")
        run_to_end(["run", str(recipe), "--out", str(rout), "--resume"], logs / "recipe-final.log")
        for stage in ("cpt", "tune"):
            if not same_weights(rout / stage / "model", workdir / "ref-recipe" / stage / "model"):
                report["problems"].append(f"recipe stage {stage}: final weights differ from the uninterrupted run")
            report["problems"] += metrics_problems(rout / stage, workdir / "ref-recipe" / stage, steps)
        report["recipe_kills"] = sum(a["killed"] for a in report["recipe_attempts"])

    report["ok"] = not report["problems"]
    return report


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--kills", type=int, default=10)
    ap.add_argument("--steps", type=int, default=30)
    ap.add_argument("--recipe-kills", type=int, default=4)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--workdir", help="scratch folder (default: a new temporary folder, removed after)")
    args = ap.parse_args()
    workdir = Path(args.workdir) if args.workdir else Path(tempfile.mkdtemp(prefix="crash-torture-"))
    t0 = time.monotonic()
    try:
        r = torture(workdir, args.kills, args.steps, args.seed, args.recipe_kills)
    finally:
        if not args.workdir:
            shutil.rmtree(workdir, ignore_errors=True)
    print(
        f"\n{r['kills']} kills of `diffutron train` ({r['kills_in_checkpoint_write']} inside checkpoint writes)"
        + (f", {r.get('recipe_kills', 0)} of `diffutron run`" if args.recipe_kills else "")
        + f"; {time.monotonic() - t0:.0f} s in all."
    )
    for p in r["problems"]:
        print("PROBLEM:", p)
    print("verdict:", "OK: bit-identical weights, every step logged once, every checkpoint loads" if r["ok"] else "FAILED")
    return 0 if r["ok"] else 1


if __name__ == "__main__":
    sys.exit(main())
