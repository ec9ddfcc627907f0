"""Fuzz rigopt with generated hostile and careless input, across every command.

    python bench/fuzz.py                 # the full run (>= 1,000 cases), seeded; exit 1 on any violation
    python bench/fuzz.py --cases 150     # a bounded subset (tests/test_fuzz.py runs this)

Every case is one `rigopt` command line, run as a forked child of an already-imported process
(tests/cli_sandbox.py: exit code, stdout, stderr, wall time, peak memory) in its own folder, with its own input
files under `in/` and `--out` under `out/`. Invariants checked for every case:

* no Python traceback, no `internal error`;
* exit code as documented (0 ok, 1 solve with a bad/infeasible question, 2 bad input, 3 cheapest infeasible);
* exit 2 prints exactly one `error:` line under 300 characters; every stderr line is under 300 characters;
* nothing is written outside the case's `out/` folder (files given as input are not changed);
* generated launch scripts, run with stub engine binaries first on PATH, execute nothing from the input
  (the marker command `touch PWNED` never runs) and hold no input text outside quoted argv values;
* under 10 s and 1 GiB per case.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import re
import shutil
import subprocess
import sys
import tempfile
import time
from collections import Counter
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from tests.cli_sandbox import GiB, run_cli  # noqa: E402

TIME_LIMIT_S = 10.0
MEM_LIMIT = 1 * GiB
MARK = "PWNED"

# ------------------------------------------------------------------------------------------ hostile values
NUMS = ["0", "-1", "1", "nan", "inf", "-inf", "1e308", "1e-320", "99999999999999999999", "9" * 5000, "1.5",
        "0x10", "1_000", " 7 ", "", "1e20", "65537", "2147483648", "-0", "3.0"]
TOKENS = ["384K", "1M", "0.5K", "8K", "1.5M", "128k", "9" * 400 + "K", "1e9", "-8K", "8KB", "K", "134217729"]
TEXT = ["", " ", "a\nb", "x\x00y", "$(touch PWNED)", "`touch PWNED`", "; touch PWNED", "'", '"', "\\",
        "../../x", "-", "--help", "A" * 10_000, "\u202eevil", "ü", "\x1b[31mred", "a" * 300, "..", "/dev/zero",
        "/proc/self/mem", "~", "*", "%s%n", "{}", "[]", "null", "true"]
MODELS_OK = ["llama-3.1-8b", "qwen3-8b", "qwen3-30b-a3b"]
ENGINES = ["vllm", "sglang", "llamacpp"]
# --host specs (optimizer/catalog/host_spec.parse_host): good ones, out-of-range fields, unknown keys and CPUs, files
HOSTS = ["epyc-9004-12ch-ddr5-4800", "epyc-9004-12ch-ddr5-4800:sockets=2,channels=8,numa=interleave",
         "epyc-9004-12ch-ddr5-4800:channels=99", "cpu=AMD EPYC 9654,bw=1e308", "cpu=x" * 3000, "a:b:c", ":",
         "sockets=2", "cpu=Mystery,channels=2,mt=5600", "epyc-9004-12ch-ddr5-4800:threads=-1",
         "/proc/self/environ.yaml", "/dev/zero.yaml", "x.yaml", "epyc-9004-12ch-ddr5-4800:bogus=1"]


def pick(rng: random.Random, *pools):
    return rng.choice(rng.choice(pools))


# ------------------------------------------------------------------------------------------ hostile files
def _mutate_json(rng: random.Random, obj, depth: int = 0):
    """A copy of obj with one random field set to a hostile value (recursing into a random branch)."""
    hostile = [None, -1, 0, 10**9, 10**18, 10**30, 2**62, float("nan"), float("inf"), 1e308, 5e-324, True, "8",
               "x\ntouch PWNED", "$(touch PWNED)", "A" * 100_000, [], {}, [1, "a"], {"a": 1}, 1.5, -1e9]
    if isinstance(obj, dict) and obj:
        out = dict(obj)
        k = rng.choice(list(out))
        if isinstance(out[k], (dict, list)) and out[k] and rng.random() < 0.5 and depth < 3:
            out[k] = _mutate_json(rng, out[k], depth + 1)
        elif rng.random() < 0.1:
            out.pop(k)
        else:
            out[k] = rng.choice(hostile)
        return out
    if isinstance(obj, list) and obj:
        out = list(obj)
        i = rng.randrange(len(out))
        out[i] = _mutate_json(rng, out[i], depth + 1) if isinstance(out[i], (dict, list)) else rng.choice(hostile)
        return out
    return rng.choice(hostile)


def _dump(obj) -> str:
    return json.dumps(obj)  # NaN/Infinity allowed on purpose: Python's json reads them


def deep(n: int = 50_000) -> str:
    return "[" * n + "]" * n


def write_model(rng: random.Random, d: Path) -> str:
    """A hostile model argument: a mutated config.json (folder or file), a GGUF with hostile metadata, a
    safetensors folder with a hostile header, a FIFO, a device, a folder named config.json, ..."""
    kind = rng.randrange(12)
    cfgs = {k: json.loads((ROOT / "models" / k / "config.json").read_text())
            for k in ("llama-3.1-8b", "qwen3-30b-a3b", "deepseek-v3", "deepseek-v4-flash", "gemma-3-27b")}
    base = cfgs[rng.choice(list(cfgs))]
    m = d / "m"
    m.mkdir(parents=True, exist_ok=True)
    if kind <= 4:
        cfg = _mutate_json(rng, base)
        if rng.random() < 0.3:
            cfg = _mutate_json(rng, cfg)
        (m / "config.json").write_text(_dump(cfg))
        return str(m) if rng.random() < 0.5 else str(m / "config.json")
    if kind == 5:
        (m / "config.json").write_text(rng.choice([deep(), "{", "", "\xff\xfe", "[1,2]", '"x"', "null",
                                                   '{"model_type": "' + "x" * 3_000_000 + '"}']))
        return str(m / "config.json")
    if kind == 6:
        p = m / rng.choice(["config.json", "x.gguf", "fifo"])
        os.mkfifo(p)
        return str(p)
    if kind == 7:
        (m / "config.json").mkdir()
        return str(m)
    if kind == 8:
        return rng.choice(["/dev/zero", "/dev/null", "/proc/self/status", "/", "/etc"])
    if kind == 9:
        return str(write_gguf(rng, m))
    if kind == 10:
        (m / "config.json").write_text(json.dumps(cfgs["llama-3.1-8b"]))
        hdr = rng.choice([b'{"a": {"dtype": "F16", "shape": [1], "data_offsets": [0, 99999999999]}}',
                          deep(5000).encode(), b"\xff" * 64, b'{"layers.' + b"9" * 5000 + b'.w": 1}',
                          b'{"x": {"dtype": 5, "shape": "a", "data_offsets": [1]}}'])
        n = len(hdr) if rng.random() < 0.7 else rng.choice([2**63, 10**12, 0])
        (m / "model.safetensors").write_bytes(n.to_bytes(8, "little") + hdr)
        return str(m)
    name = rng.choice(["evil\ntouch PWNED", "$(touch PWNED)", "sp ace", "-rf", "x" * 200])
    q = d / name
    q.mkdir(parents=True, exist_ok=True)
    (q / "config.json").write_text(json.dumps(cfgs["llama-3.1-8b"]))
    return str(q)


def write_gguf(rng: random.Random, m: Path) -> Path:
    import gguf
    import numpy as np
    name = rng.choice(["m.gguf", "m-00001-of-00002.gguf", "m-00002-of-00003.gguf"])
    w = gguf.GGUFWriter(str(m / name), "llama")
    meta = {"llama.block_count": 1, "llama.embedding_length": 8, "llama.attention.head_count": 2,
            "llama.attention.head_count_kv": 1, "llama.feed_forward_length": 16, "llama.context_length": 4096,
            "llama.vocab_size": 32}
    k = rng.choice(list(meta) + ["split.count", "general.name", "llama.expert_count"])
    v = rng.choice([0, 10**9, 2**31, "32", 1.5, [1, 2], ["a", "b"], "x" * 100_000, -1, 2**62])
    meta[k] = v
    for key, val in meta.items():
        if isinstance(val, bool) or val is None:
            continue
        if isinstance(val, str):
            w.add_string(key, val)
        elif isinstance(val, float):
            w.add_float32(key, val)
        elif isinstance(val, list):
            w.add_array(key, val)
        elif val < 0:
            w.add_int32(key, val)
        elif val < 2**32:
            w.add_uint32(key, val)
        else:
            w.add_uint64(key, val)
    w.add_tensor("token_embd.weight", np.zeros((32, 8), dtype=np.float16))
    for n, shape in (("attn_q", (8, 8)), ("attn_k", (4, 8)), ("attn_v", (4, 8)), ("attn_output", (8, 8)),
                     ("ffn_up", (16, 8)), ("ffn_gate", (16, 8)), ("ffn_down", (8, 16))):
        w.add_tensor(f"blk.0.{n}.weight", np.zeros(shape, dtype=np.float16))
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()
    return m / name


def write_loads(rng: random.Random, d: Path, layers: int = 48, experts: int = 128) -> str:
    kind = rng.randrange(8)
    p = d / rng.choice(["l.json", "l.csv", "l.txt"])
    if kind == 0:
        p.write_text("layer,expert,count\n0,0," + "1" * rng.choice([131_073, 400, 50]) + "\n")
    elif kind == 1:
        p.write_text("".join(f"{a},{e},{rng.choice(['1e308', '5e-324', '-1', 'nan', '1', '0'])}\n"
                             for a in range(layers) for e in range(experts)))
    elif kind == 2:
        p.write_text('{"logical_count": ' + deep(rng.choice([100, 50_000])) + "}")
    elif kind == 3:
        row = [rng.choice([1, 0, 1e308, 5e-324, 10**400 if rng.random() < 0.5 else 3]) for _ in range(experts)]
        p.write_text(json.dumps({rng.choice(["logical_count", "expert_load"]): [row] * layers}))
    elif kind == 4:
        m = [list(range(experts)) for _ in range(layers)]
        m[0][0] = rng.choice([10**9, -1, 1.5, 10**18])
        p.write_text(json.dumps({"expert_load": [[1] * experts] * layers, "physical_to_logical_map": m}))
    elif kind == 5:
        p.write_text(rng.choice(["", "{", "[]", "null", '{"x": 1}', "\xff\xfe"]))
    elif kind == 6:
        p = d / "fifo.json"
        os.mkfifo(p)
    else:
        return rng.choice(["uniform", "zipf:1.0", "zipf:nan", "zipf:1e308", "zipf:", "/dev/zero", "zipf:-1",
                           "x\x00y", "A" * 5000])
    return str(p)


def write_scenario(rng: random.Random, d: Path) -> Path:
    kind = rng.randrange(10)
    name = rng.choice(["s.yaml", "...yaml", "..yaml", ".yaml", "s.json", "-s.yml", "s p.yaml"])
    p = d / name
    q = {"model": rng.choice(MODELS_OK), "context": 8192, "gpus": "rtx-4090", "top": 1, "time_limit_s": 5}
    if kind == 0:
        p.write_text("a: &a [x, x, x, x, x, x, x, x, x]\n" + "".join(
            f"{c}: &{c} [{', '.join(['*' + b] * 9)}]\n" for b, c in zip("abcdefgh", "bcdefghi"))
            + "model: llama-3.1-8b\ncontext: 8192\n")
    elif kind == 1:
        p.write_text(json.dumps({**q, "description": None})[:-1] + ', "x": ' + deep(rng.choice([100, 20_000])) + "}")
    elif kind == 2:
        p.write_bytes(b"model: llama-3.1-8b\ncontext: 8192\ndescription: \xff\xfe\n")
    elif kind == 3:
        p.write_text("defaults: {model: llama-3.1-8b, context: 8192}\nquestions:\n" + "  - {tok_s: -1}\n"
                     * rng.choice([1001, 20_000]))
    elif kind == 4:
        p.write_text("a: &a [*a]\n")
    else:
        qq = dict(q)
        k = rng.choice(["context", "concurrency", "tok_s", "max_budget", "owned", "gpus", "model", "name",
                        "max_nodes", "engines", "quants", "ttft_s", "prompt_tokens", "kv_dtypes", "workers"])
        qq[k] = rng.choice([".inf", "1e20", 1e308, 99999999999999999999, -1, 0, "nan", "9" * 5000, "x\ny",
                            "$(touch PWNED)", "..", "../../etc", {"accelerators": {"rtx-4090": 99999999999}},
                            "99999999999x rtx-4090", "A" * 10_000, [1, 2], None, True, "384K"])
        import yaml
        p.write_text(yaml.safe_dump(qq) if p.suffix != ".json" else json.dumps(qq))
    return p


# ------------------------------------------------------------------------------------------ cases
def real_plans(tmp: Path) -> dict[str, dict]:
    from optimizer.solver.query import Query
    from optimizer.solver.search import cheapest
    out = {}
    for e in ENGINES:
        r = cheapest(Query(model="qwen3-30b-a3b", context=32768, engines=[e], gpus=["rtx-4090"], top=1, workers=1))
        out[e] = json.loads(r.plan.model_dump_json())
    return out


def make_case(i: int, seed: int, case_dir: Path, plans: dict, only: str = "") -> tuple[str, list[str]]:
    """(command, argv) for case i; input files are written under case_dir/in."""
    rng = random.Random(seed * 1_000_003 + i)
    inp, out = case_dir / "in", case_dir / "out"
    inp.mkdir(parents=True)
    out.mkdir()
    cmd = rng.choices(["estimate", "cheapest", "place", "solve", "export", "schema", "validate", "catalog"],
                      weights=[22, 10, 18, 10, 22, 4, 3, 3])[0] if not only else only
    def hostile_out(suffix: str = ""):
        """--out: mostly usable (under out/), else a file, a path through a file, /proc, a newline, too long."""
        if rng.random() < 0.6:
            return str(out / "o") + suffix
        (inp / "afile").write_text("x")
        return rng.choice([str(inp / "afile") if not suffix else str(out), "/proc/rigopt-fuzz" + suffix,
                           str(out / "a\nb") + suffix, str(out / ("x" * 300)) + suffix,
                           str(inp / "afile" / "sub") + suffix])
    if cmd == "estimate":
        model = write_model(rng, inp) if rng.random() < 0.6 else pick(rng, MODELS_OK, TEXT)
        argv = ["estimate", model]
        for opt, pool in (("--context", TOKENS + NUMS), ("--concurrency", NUMS),
                          ("--quant", TEXT + ["q4_k_m", "native"]),
                          ("--kv-dtype", TEXT + ["fp8"]), ("--engine", TEXT + ENGINES), ("--gpu", TEXT + ["rtx-4090"]),
                          ("--gpus", NUMS), ("--prompt", TOKENS + NUMS),
                          # the workload, engine-settings, layout and speculative-decoding options
                          ("--isl", TOKENS + NUMS), ("--osl", TOKENS + NUMS), ("--rate", NUMS),
                          ("--prefix-hit", NUMS), ("--layout", TEXT + ["dp-attn", "tp"]),
                          ("--spec", TEXT + ["mtp", "mtp:2", "eagle3:3", "eagle3:99", "mtp:x"]),
                          ("--accept-len", NUMS), ("--gpu-memory-utilization", NUMS), ("--max-num-seqs", NUMS),
                          ("--max-num-batched-tokens", NUMS), ("--mem-fraction-static", NUMS),
                          ("--block-size", NUMS), ("--n-cpu-moe", NUMS), ("--host", TEXT + HOSTS)):
            if rng.random() < 0.15:
                argv += [opt, rng.choice(pool)]
        if rng.random() < 0.3:
            argv.append("--json")
        return cmd, argv
    if cmd == "cheapest":
        model = rng.choice(MODELS_OK) if rng.random() < 0.7 else (write_model(rng, inp) if rng.random() < 0.5
                                                                  else rng.choice(TEXT))
        argv = ["cheapest", model, "--context", "8K", "--gpus", "rtx-4090", "--top", "1", "--time-limit", "5"]
        opts = [("--context", TOKENS + NUMS), ("--tok-s", NUMS), ("--concurrency", NUMS), ("--ttft", NUMS),
                ("--prompt", TOKENS + NUMS), ("--objective", TEXT + ["hourly"]), ("--max-budget", NUMS),
                ("--min-bits", NUMS), ("--min-attn-bits", NUMS), ("--gpus", TEXT), ("--engine", TEXT + ENGINES),
                ("--quant", TEXT), ("--kv-dtype", TEXT),
                ("--owned", ["99999999999x rtx-4090", "99999999999999999999999999999GB, 2x rtx-4090",
                             "2x rtx-4090, 256GB ddr5", "0x rtx-4090", "x" * 5000, "," * 3000]),
                ("--max-nodes", NUMS), ("--top", NUMS), ("--time-limit", NUMS), ("--loads", ["zipf:nan"] + TEXT),
                ("--isl", TOKENS + NUMS), ("--osl", TOKENS + NUMS), ("--rate", NUMS), ("--prefix-hit", NUMS),
                ("--spec", TEXT + ["off", "auto", "on"]), ("--tier", TEXT + ["2-bit", "4-bit"])]
        for opt, pool in rng.sample(opts, rng.choice([1, 1, 2, 3])):
            argv += [opt, rng.choice(pool)]
        if rng.random() < 0.2:
            argv += ["--out", hostile_out(".json")]
            if rng.random() < 0.5:
                argv += ["--export", rng.choice(ENGINES + ["auto"] + TEXT[:5])]
        if rng.random() < 0.08:
            argv += ["--plot", hostile_out(".png")]
        return cmd, argv
    if cmd == "place":
        plan = plans[rng.choice(ENGINES)]
        f = inp / "plan.json"
        r = rng.random()  # valid inputs are rare here: a valid EP placement runs CP-SAT up to its 8 s cap
        if r < 0.45:
            f.write_text(_dump(_mutate_json(rng, plan)))
        elif r < 0.85:
            hand = {"model": "qwen3-30b-a3b", "n_gpus": 2, "ep_size": 2}
            f.write_text(_dump(_mutate_json(rng, hand) if rng.random() < 0.9 else hand))
        elif r < 0.95:
            f.write_text(rng.choice([deep(), "{", "\xff", "[]", ""]))
        else:
            f.write_text(_dump(plan))
        argv = ["place", str(f)]
        if rng.random() < 0.6:
            argv += ["--loads", write_loads(rng, inp)]
        if rng.random() < 0.3:
            argv += ["--redundant-experts", rng.choice(NUMS + ["total:" + rng.choice(NUMS), "10000000"])]
        if rng.random() < 0.2:
            argv += ["--seed", rng.choice(NUMS)]
        if rng.random() < 0.3:
            argv += ["--out", hostile_out(".json")]
        return cmd, argv
    if cmd == "solve":
        files = [str(write_scenario(rng, inp)) for _ in range(rng.choice([1, 1, 2]))]
        argv = ["solve", *files, "--out", hostile_out(), "--jobs", "1"]
        if rng.random() < 0.2:
            argv += ["--format", rng.choice(["json", "csv", "md", "x", ""])]
        if rng.random() < 0.15:
            (out / "o").mkdir(parents=True, exist_ok=True)
            (out / "o" / ".cache").write_text("x")
        return cmd, argv
    if cmd == "export":
        engine = rng.choice(ENGINES)
        plan = plans[engine if rng.random() < 0.7 else rng.choice(ENGINES)]
        f = inp / "plan.json"
        r = rng.random()
        if r < 0.5:
            bad = _mutate_json(rng, plan)
            if rng.random() < 0.3:
                bad = _mutate_json(rng, bad)
            f.write_text(_dump(bad))
        elif r < 0.75:  # shell text in the plan's strings: refused (control characters) or never written
            f.write_text(_dump({**plan, rng.choice(["candidate_id", "candidate_id", "model", "kv_dtype", "quant"]):
                                rng.choice(["x\ntouch PWNED\n", "x\rtouch PWNED\n", "$(touch PWNED)",
                                            "`touch PWNED`", "a;touch PWNED"])}))
        elif r < 0.8:
            f.write_text(rng.choice([deep(), "{", "\xff", "[]"]))
        else:
            f.write_text(_dump(plan))
        argv = ["export", str(f), "--engine", engine if rng.random() < 0.9 else rng.choice(TEXT),
                "--out", hostile_out()]
        if rng.random() < 0.5:
            argv += ["--model-path", rng.choice(["/m", "$(touch PWNED)", "a b", "-x", "x\ny", "A" * 5000, "'\"`"])]
        if rng.random() < 0.2:  # a placement file: hostile JSON, a device, or a placement for another model
            pl = inp / "place.json"
            pl.write_text(rng.choice([deep(), "{", "\xff", "[]", _dump({"schema_id": "rigopt.place/1"}),
                                      _dump({"schema_id": "rigopt.place/1", "model": "$(touch PWNED)",
                                             "engine": None, "granularity": "expert", "loads": "x", "n_gpus": 1})]))
            argv += ["--placement", rng.choice([str(pl), str(pl), "/dev/zero", "nonexistent.json"])]
        return cmd, argv
    if cmd == "schema":
        return cmd, ["schema", rng.choice(["scenario", "plan", "cheapest", "estimate"] + TEXT[:8])]
    if cmd == "validate":
        argv = ["validate"]
        if rng.random() < 0.7:
            argv += ["--metric", rng.choice(["gguf_file_bytes", "weights_per_gpu_bytes"] + TEXT[:10])]
        return cmd, argv + (["--json"] if rng.random() < 0.5 else [])
    return cmd, (["catalog", rng.choice(["models", "gpus", "nodes"] + TEXT[:6])]
                 + (["--json"] if rng.random() < 0.5 else []))


STUB = """#!/bin/sh
exit 0
"""


def check_scripts(case_dir: Path) -> list[str]:
    """Run every generated launch script with stub engines first on PATH; report injections."""
    problems = []
    scripts = [p for p in (case_dir / "out").rglob("*.sh")]
    if not scripts:
        return problems
    stub = case_dir / "stubbin"
    stub.mkdir(exist_ok=True)
    for name in ("vllm", "python3", "llama-server", "ggml-rpc-server", "ray"):
        (stub / name).write_text(STUB)
        (stub / name).chmod(0o755)
    env = {"PATH": f"{stub}:/usr/bin:/bin", "HEAD_IP": "10.0.0.1", "IFACE_NAME": "eth0", "MODEL_PATH": "/m",
           **{f"NODE{i}_IP": f"10.0.0.{i + 1}" for i in range(1, 9)}}
    for s in scripts:
        text = s.read_text(errors="replace")
        comments = [ln for ln in text.splitlines() if ln.lstrip().startswith("#")]
        if any(MARK in ln or "$(" in ln or "`" in ln for ln in comments):
            problems.append(f"injection: input text in a comment of {s.name}")
        for arg in (["serve"] if s.name == "ray.sh" else [[]]):
            subprocess.run(["bash", str(s), *([arg] if arg else [])], cwd=case_dir / "cwd", env=env,
                           capture_output=True, timeout=10)
    if list(case_dir.rglob(MARK)):
        problems.append("injection: a launch script ran a command from the input")
    return problems


def snapshot(d: Path) -> dict[str, tuple]:
    out = {}
    for p in d.rglob("*"):
        try:
            st = p.lstat()
        except OSError:
            continue
        out[str(p.relative_to(d))] = (st.st_size, st.st_mtime_ns, st.st_mode)
    return out


def run_case(args: tuple[int, int, str, dict]) -> dict:
    i, seed, root, plans, only = args
    case_dir = Path(root) / f"case{i:05d}"
    try:
        cmd, argv = make_case(i, seed, case_dir, plans, only)
    except Exception as e:  # a generator bug is the harness's problem, not rigopt's
        return {"i": i, "cmd": "?", "problems": [f"harness: {type(e).__name__}: {e}"], "seconds": 0, "rss": 0}
    (case_dir / "cwd").mkdir()
    before = snapshot(case_dir)
    r = run_cli(argv, cwd=str(case_dir / "cwd"), timeout=TIME_LIMIT_S + 5, mem_cap=3 * GiB)
    problems = []
    lines = [ln for ln in r.err.splitlines() if ln.strip() and not ln.startswith("solve ")]
    if r.timed_out or r.seconds > TIME_LIMIT_S:
        problems.append(f"slow: {r.seconds:.1f} s")
    if r.max_rss_bytes > MEM_LIMIT:
        problems.append(f"memory: {r.max_rss_bytes / GiB:.2f} GiB")
    if r.traceback:
        problems.append("traceback")
    if r.internal:
        problems.append("internal error")
    allowed = {"solve": {0, 1, 2}, "cheapest": {0, 2, 3}}.get(cmd, {0, 2})
    if not r.timed_out and r.code not in allowed:
        problems.append(f"exit code {r.code}")
    if r.code == 2:
        if len(lines) != 1 or not lines[0].startswith("error: ") or len(lines[0]) >= 300:
            problems.append(f"error line: {len(lines)} line(s), first {lines[0][:80] if lines else ''!r}")
    if any(len(ln) >= 300 for ln in lines):
        problems.append("a stderr line of 300+ characters")
    after = snapshot(case_dir)
    out_prefix = "out" + os.sep
    for rel, meta in after.items():
        if rel.startswith(out_prefix) or rel == "out" or rel.startswith("stubbin"):
            continue
        if rel not in before:
            problems.append(f"escape: wrote {rel[:80]!r} outside --out")
        elif before[rel] != meta and not os.path.isdir(case_dir / rel):
            problems.append(f"escape: changed input {rel[:80]!r}")
    for name in os.listdir(root):  # cases are folders caseNNNNN; anything else escaped some case's folder
        if not re.fullmatch(r"case\d{5}", name):
            problems.append(f"escape: wrote {name[:80]!r} next to the case folders")
            shutil.rmtree(Path(root) / name, ignore_errors=True)
            try:
                os.unlink(Path(root) / name)
            except OSError:
                pass
    problems += check_scripts(case_dir)
    shutil.rmtree(case_dir, ignore_errors=True)
    return {"i": i, "cmd": cmd, "argv": [a[:60] for a in argv[:8]], "code": r.code, "problems": problems,
            "seconds": r.seconds, "rss": r.max_rss_bytes, "err": r.err[-300:] if problems else ""}


def _preload() -> None:
    """Import and cache everything a command needs once, so every forked case starts warm."""
    import typer.main

    import optimizer.cli
    import optimizer.export  # noqa: F401
    import optimizer.fidelity.report  # noqa: F401
    import optimizer.place  # noqa: F401
    import optimizer.report.catalog  # noqa: F401
    import optimizer.report.cheapest  # noqa: F401
    import optimizer.report.estimate  # noqa: F401
    import optimizer.report.render  # noqa: F401
    import optimizer.scenarios.batch  # noqa: F401
    import optimizer.scenarios.plot  # noqa: F401
    import optimizer.solver.search  # noqa: F401
    from optimizer.catalog.hardware import load_hardware
    from optimizer.catalog.models import resolve_model
    load_hardware()
    for k in MODELS_OK:
        resolve_model(k)
    # typer rebuilds its click command on every call (~80 ms); build it once (the harness only, same command)
    cmd = typer.main.get_command(optimizer.cli.app)
    orig = typer.main.get_command
    typer.main.get_command = lambda t: cmd if t is optimizer.cli.app else orig(t)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--cases", type=int, default=1000)
    ap.add_argument("--seed", type=int, default=14)
    ap.add_argument("--jobs", type=int, default=min(2, os.cpu_count() or 1))
    ap.add_argument("--json", action="store_true", help="print the summary as JSON")
    ap.add_argument("--only", default="", help="generate cases for this one command (debugging)")
    a = ap.parse_args(argv)
    t0 = time.perf_counter()
    _preload()
    root = Path(tempfile.mkdtemp(prefix="rigopt-fuzz-"))
    try:
        plans = real_plans(root)
        import multiprocessing
        ctx = multiprocessing.get_context("fork")
        with ProcessPoolExecutor(max_workers=a.jobs, mp_context=ctx) as pool:
            jobs = [(i, a.seed, str(root), plans, a.only) for i in range(a.cases)]
            results = list(pool.map(run_case, jobs, chunksize=4))
    finally:
        shutil.rmtree(root, ignore_errors=True)
    wall = time.perf_counter() - t0
    kinds = Counter()
    for r in results:
        for p in r["problems"]:
            kinds[p.split(":")[0].split(" ")[0]] += 1
    summary = {
        "cases": len(results), "seed": a.seed, "jobs": a.jobs, "wall_s": round(wall, 1),
        "by_command": dict(sorted(Counter(r["cmd"] for r in results).items())),
        "exit_codes": dict(sorted(Counter(str(r.get("code")) for r in results).items())),
        "tracebacks": kinds["traceback"], "internal_errors": kinds["internal"], "injections": kinds["injection"],
        "escapes": kinds["escape"], "over_10s": kinds["slow"], "over_1GiB": kinds["memory"],
        "bad_exit_codes": kinds["exit"], "bad_error_lines": kinds["error"] + kinds["a"],
        "harness_errors": kinds["harness"],
        "seconds_by_command": {c: round(sum(r["seconds"] for r in results if r["cmd"] == c), 1)
                               for c in sorted({r["cmd"] for r in results})},
        "slowest_s": round(max(r["seconds"] for r in results), 2),
        "peak_rss_MiB": round(max(r["rss"] for r in results) / 2**20),
    }
    failed = [r for r in results if r["problems"]]
    summary["failed_cases"] = len(failed)
    if a.json:
        print(json.dumps({**summary, "failures": failed[:20]}, indent=2))
    else:
        print(f"fuzz: {summary['cases']} cases (seed {a.seed}, {a.jobs} jobs) in {summary['wall_s']} s; "
              f"by command {summary['by_command']}; exit codes {summary['exit_codes']}")
        print(f"fuzz: tracebacks {summary['tracebacks']}, internal errors {summary['internal_errors']}, "
              f"injections {summary['injections']}, escapes {summary['escapes']}, over 10 s {summary['over_10s']}, "
              f"over 1 GiB {summary['over_1GiB']}, bad exit codes {summary['bad_exit_codes']}, "
              f"bad error lines {summary['bad_error_lines']}; slowest {summary['slowest_s']} s, "
              f"peak {summary['peak_rss_MiB']} MiB")
        slow = max(results, key=lambda r: r["seconds"])
        print(f"fuzz: slowest case {slow['i']} ({slow['cmd']}, {slow['seconds']:.2f} s): {slow.get('argv')}")
        for r in failed[:15]:
            print(f"  case {r['i']} {r['cmd']} {r['argv']}: {r['problems']} | {r['err'][-200:]!r}")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
