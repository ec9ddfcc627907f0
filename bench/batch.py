"""Time `rigopt solve` over generated scenarios: python bench/batch.py [--n 100] [--jobs N] [--seed 0] [--keep DIR]

    python bench/batch.py --sweep 1000 [--jobs 2] [--executors local,ray]

`--sweep N`: one scenario file with a generated `sweep:` grid of about N questions (models x contexts x tok/s
targets x GPU sets, the product), solved with each executor in turn (cache off), printing questions per second
per core and whether every executor gave the same summary.

Writes N single-question scenario files (varied models, contexts, concurrency, tok/s targets, objectives, allowed or
owned hardware; half in the `questions:` form, half single-question, a few JSON) to a temp folder, solves them all
with the cache off, then once more with the cache on (every answer a cache hit), and prints both times.
"""

from __future__ import annotations

import argparse
import itertools
import json
import math
import random
import shutil
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from optimizer.scenarios import default_jobs, solve  # noqa: E402

# (model, contexts to draw from, tok/s targets); contexts within each model's window
MODELS = [
    ("deepseek-v4-pro", ["128K", "384K", "1M"], [0, 10, 20]),
    ("deepseek-v4-flash", ["128K", "384K", "1M"], [0, 10, 20, 30]),
    ("deepseek-v3", ["32K", "128K"], [0, 10, 20]),
    ("kimi-k2-instruct", ["32K", "128K"], [0, 10]),
    ("qwen3-235b-a22b", ["32K"], [0, 10, 20]),
    ("llama-3.1-70b", ["8K", "32K", "128K"], [0, 10, 20]),
    ("gpt-oss-120b", ["32K", "128K"], [0, 20, 50]),
    ("gpt-oss-20b", ["32K", "128K"], [0, 30, 60]),
    ("qwen3-30b-a3b", ["8K", "32K"], [0, 30, 60]),
    ("qwen3-32b", ["8K", "32K"], [0, 15, 30]),
    ("deepseek-r1-distill-qwen-32b", ["8K", "32K"], [0, 15, 30]),
    ("gemma-3-27b", ["8K", "32K", "128K"], [0, 20]),
    ("llama-3.1-8b", ["8K", "32K", "128K"], [0, 50, 100]),
    ("qwen3-8b", ["8K", "32K"], [0, 50]),
]
HARDWARE = [None, None, None, ["h100-sxm", "h200-sxm"], ["rtx-4090"], ["rtx-3090", "rtx-5090"], ["m3-ultra-512gb"],
            ["mi300x"], ["b200"]]
OWNED = ["2x rtx-4090, 256GB ddr5", "4x rtx-3090, 512GB", "8x h100-sxm"]


def question(rng: random.Random, i: int) -> dict:
    model, ctxs, speeds = rng.choice(MODELS)
    q: dict = {"name": f"q{i:03d}", "model": model, "context": rng.choice(ctxs), "tok_s": rng.choice(speeds),
               "objective": rng.choice(["capex", "capex", "hourly", "power"])}
    if rng.random() < 0.3:
        q["concurrency"] = rng.choice([2, 4, 8, 16])
    r = rng.random()
    if r < 0.15:
        q["owned"] = rng.choice(OWNED)
        q["objective"] = "capex"
    else:
        hw = rng.choice(HARDWARE)
        if hw:
            q["gpus"] = hw
    if rng.random() < 0.15:
        q["min_expert_bits"] = 4
    return q


def generate(folder: Path, n: int, seed: int) -> list[Path]:
    rng = random.Random(seed)
    out = []
    for i in range(n):
        q = question(rng, i)
        if i % 10 == 9:
            p = folder / f"s{i:03d}.json"
            p.write_text(json.dumps(q, indent=2))
        elif i % 2:
            p = folder / f"s{i:03d}.yaml"
            p.write_text("\n".join(f"{k}: {json.dumps(v)}" for k, v in q.items()) + "\n")
        else:
            name = q.pop("name")
            model = q.pop("model")
            p = folder / f"s{i:03d}.yaml"
            p.write_text(f"name: generated {i}\ndefaults:\n  model: {model}\nquestions:\n  - name: {name}\n"
                         + "".join(f"    {k}: {json.dumps(v)}\n" for k, v in q.items()))
        out.append(p)
    return out


SWEEP_MODELS = ["qwen3-8b", "llama-3.1-8b", "qwen3-30b-a3b", "gpt-oss-20b", "qwen3-32b", "gemma-3-27b",
                "gpt-oss-120b", "llama-3.1-70b", "qwen3-235b-a22b", "deepseek-v4-flash"]
SWEEP_CONTEXTS = ["8K", "16K", "32K", "64K", "128K"]
SWEEP_TOK_S = [10, 15, 20, 25, 30, 40, 50, 60, 80, 100]
SWEEP_GPUS = [["rtx-4090"], ["rtx-3090", "rtx-5090"], ["h100-sxm", "h200-sxm"], ["l40s"]]


def sweep_file(folder: Path, n: int) -> Path:
    """A scenario file whose sweep has as many questions as possible up to n (a file may ask at most 1,000): a prefix
    of each list, the product closest to n from below, then the fewest models and contexts (the cheapest mix:
    the lists run from small to large models and contexts). n = 1000: 5 models x 5 contexts x 10 tok/s x 4 GPU sets."""
    lists = [SWEEP_MODELS, SWEEP_CONTEXTS, SWEEP_TOK_S, SWEEP_GPUS]
    shapes = [sz for sz in itertools.product(*(range(1, len(x) + 1) for x in lists)) if math.prod(sz) <= max(n, 1)]
    sizes = max(shapes, key=lambda sz: (math.prod(sz), -sz[0], -sz[1]))  # the first of equals, in product order
    p = folder / "sweep.yaml"
    p.write_text("name: generated sweep\ndefaults:\n  top: 1\n  time_limit_s: 10\nsweep:\n"
                 f"  model: {json.dumps(SWEEP_MODELS[:sizes[0]])}\n  context: {json.dumps(SWEEP_CONTEXTS[:sizes[1]])}\n"
                 f"  tok_s: {json.dumps(SWEEP_TOK_S[:sizes[2]])}\n  gpus: {json.dumps(SWEEP_GPUS[:sizes[3]])}\n")
    return p


def run_sweep(n: int, jobs: int, executors: list[str]) -> int:
    summaries = {}
    with tempfile.TemporaryDirectory() as tmp:
        f = sweep_file(Path(tmp), n)
        for ex in executors:
            out = Path(tmp) / f"out-{ex}"
            t = time.perf_counter()
            rep = solve([f], jobs=jobs, out_dir=out, fmt="md", progress=False, echo=False, use_cache=False,
                        executor=ex)
            dt = time.perf_counter() - t
            summaries[ex] = [(r.question, r.status, r.cost, r.node, r.quant) for r in rep.rows]
            print(f"sweep of {rep.questions} questions, executor {ex}, {jobs} CPU(s): {dt:.1f} s, "
                  f"{rep.questions / dt / jobs:.2f} questions/s per core; {rep.solved} solved, {rep.infeasible} "
                  f"infeasible, {rep.failed} failed")
            if not rep.questions or rep.bad_files:
                print(f"the generated sweep was not solved ({rep.bad_files} bad file(s))")
                return 1
    same = len({json.dumps(v) for v in summaries.values()}) == 1
    print(f"same summary from every executor: {same}")
    return 0 if same else 1


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--sweep", type=int, help="solve one generated sweep of about this many questions instead")
    ap.add_argument("--executors", default="local,ray")
    ap.add_argument("--n", type=int, default=100)
    ap.add_argument("--jobs", type=int, default=default_jobs())
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--keep", help="write scenarios and results here instead of a temp folder")
    a = ap.parse_args()
    if a.sweep:
        return run_sweep(a.sweep, a.jobs, [x.strip() for x in a.executors.split(",") if x.strip()])
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(a.keep) if a.keep else Path(tmp)
        scen, out = root / "scenarios", root / "out"
        scen.mkdir(parents=True, exist_ok=True)
        generate(scen, a.n, a.seed)
        t = time.perf_counter()
        shutil.rmtree(out, ignore_errors=True)  # a cold start: no plans, no cache
        cold = solve([scen], jobs=a.jobs, out_dir=out, fmt="md", progress=False, echo=False)
        cold_s = time.perf_counter() - t
        t = time.perf_counter()
        warm = solve([scen], jobs=a.jobs, out_dir=out, fmt="md", progress=False, echo=False)
        warm_s = time.perf_counter() - t
    slowest = sorted(cold.rows, key=lambda r: -r.seconds)[:5]
    print(f"{a.n} generated scenarios, {a.jobs} job(s)")
    print(f"cold (solved): {cold_s:.1f} s; {cold.solved} solved, {cold.infeasible} infeasible, {cold.failed} failed, "
          f"{cold.bad_files} bad; sum of per-question solver time {sum(r.seconds for r in cold.rows):.1f} s")
    print("slowest: " + ", ".join(f"{r.question} {r.model} {r.status} {r.seconds:.1f}s" for r in slowest))
    print(f"warm (cache): {warm_s:.1f} s; {warm.cache_hits} cache hits, {warm.cache_misses} solved")
    print(f"target < 60 s: {'met' if cold_s < 60 else 'NOT met'}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
