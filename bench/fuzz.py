"""Fuzz rigopt with generated hostile and careless input, across every command.

    python bench/fuzz.py                 # the full run (>= 1,000 cases), seeded; exit 1 on any violation
    python bench/fuzz.py --cases 150     # a bounded subset (tests/test_fuzz.py runs this)

Every case is one `rigopt` command line, run as a forked child of an already-imported process
(tests/cli_sandbox.py: exit code, stdout, stderr, CPU time, peak memory) in its own folder, with its own input
files under `in/` and `--out` under `out/` (the Hugging Face cache and the calibration profile live there too).
Commands and input channels: estimate, cheapest (SLA form, --owned local, --export auto, --plot), place, solve
(scenario files with every field), export (vLLM, SGLang, llama.cpp, Ollama, LM Studio, MLX, --placement), fleet
(and its --out exports), mixed (inventories, --buy, --export with per-box scripts), calibrate (every log kind made
hostile, the profiles it reads and writes), detect (fake vendor tools first on PATH printing hostile output),
Hugging Face ids against a fake Hub on 127.0.0.1 (huge, deep, negative, slow, redirecting to another host, path
traversal in shard names, malformed answers; --offline and HF_HUB_OFFLINE), schema, validate, catalog.
Invariants checked for every case:

* no Python traceback, no `internal error`;
* exit code as documented (0 ok, 1 solve with a bad/infeasible question, 2 bad input, 3 cheapest infeasible);
* exit 2 prints exactly one `error:` line under 300 characters; every stderr line is under 300 characters;
* nothing is written outside the case's `out/` folder (files given as input are not changed);
* generated launch scripts, run with stub engine binaries first on PATH, execute nothing from the input
  (the marker command `touch PWNED` never runs) and hold no input text outside quoted argv values;
* no network connection except to the fake Hub (an audit hook on socket.connect / getaddrinfo in every run), none
  at all offline, and no request reaches the "other host" a hostile Hub redirects to;
* under 10 s of CPU and 1 GiB per case (CPU time, not wall: the machine may be loaded).
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

TIME_LIMIT_S = 10.0   # CPU seconds per case
HANG_S = 60.0         # wall-clock guard against a run that waits on nothing (reported as a hang)
MEM_LIMIT = 1 * GiB
MARK = "PWNED"
DATA = ROOT / "tests" / "data"

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
            f"{c}: &{c} [{', '.join(['*' + b] * 9)}]\n" for b, c in zip("abcdefgh", "bcdefghi", strict=True))
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
        from optimizer.scenarios.schema import Question
        fields = list(Question.model_fields)  # every field a question may set
        if rng.random() < 0.3:  # the SLA form, the workload form, the mixed form: then one field made hostile
            qq.update(rng.choice([{"isl": 1000, "osl": 200, "rate_rps": 1, "ttft_s": 2, "tpot_s": 0.05,
                                   "gpus": "rtx-4090"},
                                  {"isl": 1000, "osl": 200, "rate_rps": 1, "tok_s": 10},
                                  {"owned": {"inventory": "1x rtx-4090, 1x rtx-3090"}, "gpus": None}]))
            qq = {k: v for k, v in qq.items() if v is not None}
        for k in rng.sample(fields, rng.choice([1, 1, 2])):
            qq[k] = rng.choice([".inf", "1e20", 1e308, 99999999999999999999, -1, 0, "nan", "9" * 5000, "x\ny",
                                "$(touch PWNED)", "..", "../../etc", {"accelerators": {"rtx-4090": 99999999999}},
                                "99999999999x rtx-4090", "A" * 10_000, [1, 2], None, True, "384K", 1e-9, 0.5,
                                {"inventory": "; ".join(f"b{i}: 1x rtx-4090" for i in range(17))},
                                {"boxes": [{"gpus": {"rtx-4090": 65}}]}, "on", "hourly", ["vllm", "x"], 99.95])
        import yaml
        p.write_text(yaml.safe_dump(qq) if p.suffix != ".json" else json.dumps(qq))
    return p


# ------------------------------------------------------------------------------------------ new surfaces
HUB_KINDS = ["ok", "slow", "redirect", "badheader", "deep", "huge", "neg", "inf", "bigtensor", "dtype", "traversal",
             "gated", "missing", "negshape", "nonjson"]


def hub_repos(other_url: str) -> dict:
    """The fake Hub's repositories, one per hostile behaviour (set up once, before the workers fork)."""
    from tests.fake_hub import Repo, safetensors_bytes
    cfg = (ROOT / "models" / "qwen3-8b" / "config.json").read_bytes()
    ok = safetensors_bytes({"lm_head.weight": ("BF16", [8, 8])}, {"BF16": 2})

    def st(header: dict, data: int = 128) -> bytes:
        raw = json.dumps(header).encode()
        return len(raw).to_bytes(8, "little") + raw + bytes(data)

    def index(meta: str, wm: dict) -> bytes:
        return ('{"metadata": {"total_size": ' + meta + '}, "weight_map": ' + json.dumps(wm) + "}").encode()

    w = {"model.layers.0.mlp.w": {"dtype": "BF16", "shape": [8, 8], "data_offsets": [0, 128]}}
    return {
        "fz/ok": Repo({"config.json": cfg, "model.safetensors": ok}),
        "fz/slow": Repo({"config.json": cfg, "model.safetensors": ok}, trickle_s=0.05),
        "fz/redirect": Repo({"config.json": cfg}, redirect_to=other_url),
        "fz/badheader": Repo({"config.json": cfg}, bad_header=True),
        "fz/deep": Repo({"config.json": deep(20_000).encode()}),
        "fz/huge": Repo({"config.json": cfg}, lie_size={"config.json": 10**12}),
        "fz/neg": Repo({"config.json": cfg, "model.safetensors.index.json": index("-1", {})}),
        "fz/inf": Repo({"config.json": cfg, "model.safetensors.index.json": index("1e309", {})}),
        "fz/bigtensor": Repo({"config.json": cfg, "model.safetensors": st(
            {"w": {"dtype": "BF16", "shape": [2**62, 2**62], "data_offsets": [0, 128]}})}),
        "fz/dtype": Repo({"config.json": cfg, "model.safetensors": st({"w": {**w["model.layers.0.mlp.w"],
                                                                              "dtype": "F7"}})}),
        "fz/traversal": Repo({"config.json": cfg, "../../x.safetensors": st(w), "model.safetensors.index.json": index(
            "128", {"model.layers.0.mlp.w": "../../x.safetensors"})}),
        "fz/gated": Repo({"config.json": cfg}, gated=True),
        "fz/negshape": Repo({"config.json": cfg, "model.safetensors": st(
            {"w": {"dtype": "BF16", "shape": [-8, 8], "data_offsets": [0, 128]}})}),
        "fz/nonjson": Repo({"config.json": b"\xff\xfe not json"}),
    }


LOG_FILES = sorted(p for p in (DATA / "logs").iterdir() if p.is_file() and p.name != "README.md")
# flags with which each sample log calibrates (exit 0), so hostile variants start from a readable log
LOG_FLAGS = {"llama_bench_spark.md": ["--gpu", "dgx-spark", "--model", "qwen3-30b-a3b"],
             "llama_bench_strixhalo.json": ["--gpu", "ryzen-ai-max-395-128gb"],
             "llama_bench_strixhalo.md": ["--gpu", "ryzen-ai-max-395-128gb"],
             "llama_server_4x3090.log": ["--gpu", "rtx-3090", "--model", "qwen3-30b-a3b", "--quant", "q4_k_m",
                                         "--gpus", "4"],
             "sglang_bench_b200_qwen3_235b.txt": ["--gpu", "b200", "--model", "qwen3-235b-a22b", "--gpus", "8"],
             "sglang_startup_4xh100.log": ["--gpu", "h100", "--model", "llama-3.1-8b", "--gpus", "4"],
             "vllm_bench_h100_qwen3_8b.txt": ["--gpu", "h100", "--model", "qwen3-8b"],
             "vllm_startup_a100.log": ["--gpu", "a100-80gb", "--model", "llama-3.1-8b"]}


def write_log(rng: random.Random, d: Path, base: Path) -> str:
    """A calibrate log: a real one of every supported kind, mutated (huge lines, binary, deep nesting, non-finite
    numbers, many lines, shell metacharacters in its name), or not a regular file at all."""
    text = base.read_text(errors="replace")
    name = rng.choice([base.name, base.name, "$(touch PWNED).log", "a;touch PWNED.txt", "x\ny.log", "-rf.json",
                       "' \".md"])
    if "/" in name or "\x00" in name:
        name = base.name
    kind = rng.choice([0, 0, 0, 0, 1, 2, 3, 4, 4, 5, 6, 7, 8, 9])
    if kind == 1:
        lines = text.splitlines()
        lines.insert(rng.randrange(len(lines) + 1), "9" * rng.choice([50, 5000, 2_000_000]))
        text = "\n".join(lines)
    elif kind == 2:
        (d / name).write_bytes(bytes(rng.randrange(256) for _ in range(rng.choice([10, 5000]))) + text.encode()[:500])
        return str(d / name)
    elif kind == 3:
        text = ('{"results": ' if rng.random() < 0.5 else "[") + deep(rng.choice([40, 100_000]))
    elif kind == 4:
        nums = re.findall(r"\d+\.\d+|\b\d+\b", text)
        for n in rng.sample(nums, min(len(nums), rng.choice([1, 5, 50]))):
            text = text.replace(n, rng.choice(["nan", "inf", "-inf", "1e400", "NaN", "Infinity", "9" * 400, "-1",
                                                "0", "1e-320"]), 1)
    elif kind == 5:
        text = (text + "\n") * rng.choice([50, 3000]) if len(text) < 20_000 else text
    elif kind == 6:
        text = "x\n" * rng.choice([10, 250_000])
    elif kind == 7:
        p = d / "fifo.log"
        os.mkfifo(p)
        return str(p)
    elif kind == 8:
        return rng.choice(["/dev/zero", "/dev/null", "/proc/self/status", "/etc", str(d / "missing.log")])
    (d / name).write_text(text)
    return str(d / name)


def write_profile(rng: random.Random, d: Path) -> str:
    p = d / "profile.yaml"
    p.write_text(rng.choice([
        "x: " + deep(rng.choice([40, 100_000])), "a: &a [*a]\n", "schema_id: rigopt.profile/1\nentries: 5\n",
        "schema_id: rigopt.profile/1\nentries:\n- {factor: .nan}\n", "\xff\xfe", "", "[]", "- " * 50_000 + "x\n",
        "a: &a [x, x, x, x, x, x, x, x, x]\n" + "".join(
            f"{c}: &{c} [{', '.join(['*' + b] * 9)}]\n" for b, c in zip("abcdefgh", "bcdefghi", strict=True))]))
    return str(p)


TOOL_SAMPLES = {"nvidia-smi": DATA / "detect" / "linux-nvidia" / "nvidia-smi.out",
                "dmidecode": DATA / "detect" / "linux-nvidia" / "dmidecode.out",
                "lscpu": DATA / "detect" / "linux-nvidia" / "lscpu.out",
                "system_profiler": DATA / "detect" / "mac-m4-max" / "system_profiler.out"}


def write_tools(rng: random.Random, bindir: Path) -> None:
    """Fake vendor tools first on PATH: a real sample output, mutated (400-digit sizes, deep JSON, 10^5 devices,
    binary, shell text in names, a failing exit), or output without end."""
    bindir.mkdir(parents=True, exist_ok=True)
    for tool in rng.sample(["nvidia-smi", "rocm-smi", "system_profiler", "dmidecode", "lscpu"], rng.choice([1, 2, 3])):
        sample = TOOL_SAMPLES.get(tool)
        text = sample.read_text() if sample else '{"card0": {"Card Series": "MI300X", "VRAM Total Memory (B)": ' \
                                                  '"206141652992"}}'
        kind = rng.randrange(8)
        if kind == 1:
            nums = re.findall(r"\b\d{2,}\b", text)
            for n in rng.sample(nums, min(len(nums), 3)):
                text = text.replace(n, "9" * rng.choice([41, 400, 5000]), 1)
        elif kind == 2:
            text = '{"x": ' + deep(rng.choice([40, 100_000])) + "}"
        elif kind == 3:
            text = "".join(f"{i}, NVIDIA GeForce RTX 4090, 24564, 4, 16, 4, 16, 0000:{i % 256:02x}:00.0\n"
                           for i in range(rng.choice([65, 100_000])))
        elif kind == 4:
            text = "".join(chr(rng.randrange(1, 0x2FF)) for _ in range(3000))
        elif kind == 5:
            text = text.replace("RTX", "$(touch PWNED) `touch PWNED` RTX").replace("Model name", "Model name;rm")
        out = bindir / f"{tool}.out"
        out.write_text(text)
        if kind == 6:
            body = "exec yes \"$(cat '" + str(out) + "')\"\n"  # output without end, cheaply (killed past 4 MiB)
        elif kind == 7:
            body = "echo 'boom $(touch PWNED)' >&2\nexit 3\n"
        else:
            body = "cat '" + str(out) + "'\n"
        (bindir / tool).write_text("#!/bin/sh\n" + body)
        (bindir / tool).chmod(0o755)


# ------------------------------------------------------------------------------------------ cases
def real_plans() -> dict[str, dict]:
    from optimizer.solver.query import Query
    from optimizer.solver.search import cheapest
    out = {}
    for e in ENGINES:
        r = cheapest(Query(model="qwen3-30b-a3b", context=32768, engines=[e], gpus=["rtx-4090"], top=1, workers=1))
        out[e] = json.loads(r.plan.model_dump_json())
    r = cheapest(Query(model="llama-3.1-8b", context=8192, engines=["llamacpp"], gpus=["rtx-4090"], top=1, workers=1))
    out["desktop"] = json.loads(r.plan.model_dump_json())
    return out


COMMANDS = {"estimate": 20, "cheapest": 10, "place": 14, "solve": 10, "export": 18, "schema": 3, "validate": 2,
            "catalog": 2, "fleet": 10, "mixed": 10, "calibrate": 12, "detect": 6, "hub": 6, "desktop": 8}
NEW = ("fleet", "mixed", "calibrate", "detect", "hub", "desktop")


def make_case(i: int, seed: int, case_dir: Path, plans: dict, only: str = "") -> tuple[str, list[str], dict]:
    """(command, argv, environment changes) for case i; input files are written under case_dir/in, the fake tools
    and the network log under case_dir/aux."""
    rng = random.Random(seed * 1_000_003 + i)
    cmd = only or rng.choices(list(COMMANDS), weights=list(COMMANDS.values()))[0]
    if cmd in NEW:
        return make_new_case(rng, cmd, case_dir, plans)
    c, argv = make_old_case(rng, cmd, case_dir, plans)
    return c, argv, {}


def hostile_out_of(rng: random.Random, inp: Path, out: Path):
    def hostile_out(suffix: str = ""):
        """--out: mostly usable (under out/), else a file, a path through a file, /proc, a newline, too long."""
        if rng.random() < 0.6:
            return str(out / "o") + suffix
        (inp / "afile").write_text("x")
        return rng.choice([str(inp / "afile") if not suffix else str(out), "/proc/rigopt-fuzz" + suffix,
                           str(out / "a\nb") + suffix, str(out / ("x" * 300)) + suffix,
                           str(inp / "afile" / "sub") + suffix])
    return hostile_out


INVENTORIES = ["1x rtx-4090", "1x rtx-4090, 1x rtx-3090, 64GB ddr5", "a: 1x rtx-4090; b: 1x rtx-3090; net: 10gbe",
               "2x rtx-3090, 128GB ddr4, nvme 2TB gen4", "1x rtx-4090, psu 850W"]
HOSTILE_INVENTORIES = ["", ";;;", "net: 10gbe", "99999999999x rtx-4090", "1x rtx-4090, psu " + "9" * 400,
                       "; ".join(f"b{i}: 1x rtx-4090" for i in range(17)), "x" * 5000, "1x $(touch PWNED)",
                       "a: 1x rtx-4090; a: 1x rtx-3090", "1x rtx-4090, 99999999999999999999999TB ddr5",
                       "1x m4-max-128gb", "net: 10gbe; net: 1gbe; 1x rtx-4090", "1x rtx-4090, host $(x)",
                       "a\nb: 1x rtx-4090", "1x rtx-4090, 1x rtx-4090, " * 40]


def make_new_case(rng: random.Random, cmd: str, case_dir: Path, plans: dict) -> tuple[str, list[str], dict]:
    inp, out, aux = case_dir / "in", case_dir / "out", case_dir / "aux"
    inp.mkdir(parents=True)
    out.mkdir()
    aux.mkdir()
    hostile_out = hostile_out_of(rng, inp, out)
    env: dict = {}
    if cmd == "fleet":
        vals = {"--isl": "1000", "--osl": "200", "--rate": "1", "--ttft": "2", "--tpot": "0.05"}
        for k in rng.sample(list(vals), rng.choice([0, 0, 1, 1, 2])):
            vals[k] = rng.choice(TOKENS + NUMS if k in ("--isl", "--osl") else NUMS)
        argv = ["fleet", rng.choice(["llama-3.1-8b", "qwen3-8b"]) if rng.random() < 0.9 else rng.choice(TEXT)]
        for k, v in vals.items():
            if rng.random() > 0.03:
                argv += [k, v]
        opts = [("--percentile", NUMS + ["90", "99.9", "50"]), ("--api-price", ["in:0.27,out:1.1", "in:nan,out:1",
                "in:1e308,out:1", "in:-1,out:1", "out:1"] + TEXT), ("--objective", ["hourly", "capex"] + TEXT),
                ("--gpus", ["rtx-4090", "h100", "rtx-4090,h100"] + TEXT), ("--amortize-months", NUMS),
                ("--usd-per-kwh", NUMS)]
        for opt, pool in rng.sample(opts, rng.choice([0, 0, 1, 2])):
            argv += [opt, rng.choice(pool)]
        if "--gpus" not in argv and rng.random() < 0.8:
            argv += ["--gpus", rng.choice(["h100", "l4"])]  # keeps the valid solves short
        sla_form = rng.random() < 0.15  # the SLA form of cheapest answers with the same fleet solver
        if rng.random() < 0.2 and not sla_form:
            argv.append("--no-disagg")
        if rng.random() < 0.5:
            argv += ["--out", hostile_out()]
        if rng.random() < 0.3:
            argv.append("--json")
        if sla_form:
            argv = ["cheapest", argv[1], *argv[2:]]
        return cmd, argv, env
    if cmd == "mixed":
        inv = rng.choice(INVENTORIES) if rng.random() < 0.55 else rng.choice(HOSTILE_INVENTORIES)
        argv = ["mixed", rng.choice(["llama-3.1-8b", "qwen3-30b-a3b", "qwen3-8b"]) if rng.random() < 0.9 else
                rng.choice(TEXT), "--owned", inv]
        opts = [("--context", TOKENS + NUMS + ["8K"]), ("--tok-s", NUMS), ("--concurrency", NUMS),
                ("--buy-types", ["rtx-4090", "rtx-3090,rtx-4090"] + TEXT[:8]), ("--min-bits", NUMS),
                ("--quant", ["q4_k_m", "q4_k_m,q3_k_m"] + TEXT[:8]), ("--max-budget", NUMS),
                ("--engine", ["llamacpp", "vllm"] + TEXT[:6]), ("--confidence", NUMS)]
        for opt, pool in rng.sample(opts, rng.choice([0, 0, 0, 1, 2])):
            argv += [opt, rng.choice(pool)]
        if rng.random() < 0.2:
            argv.append("--buy")
        if rng.random() < 0.5:
            argv += ["--export", hostile_out(".sh")]
        if rng.random() < 0.3:
            argv.append("--json")
        if rng.random() < 0.1:  # `--owned local` (detect) feeding mixed and cheapest
            write_tools(rng, aux / "bin")
            env["PATH"] = f"{aux / 'bin'}:/usr/bin:/bin"
            argv = (["mixed", "llama-3.1-8b", "--owned", "local"] if rng.random() < 0.5 else
                    ["cheapest", "llama-3.1-8b", "-c", "8K", "--owned", "local", "--time-limit", "5"])
        return cmd, argv, env
    if cmd == "calibrate":
        base = rng.choice(LOG_FILES)
        logs = [write_log(rng, inp, base) for _ in range(rng.choice([1, 1, 1, 2]))]
        argv = ["calibrate", *logs]
        known = LOG_FLAGS.get(base.name, [])
        if rng.random() < 0.7:
            argv += known
        for opt, pool in (("--model", MODELS_OK + ["gpt-oss-120b"] + TEXT[:6]),
                          ("--gpu", ["rtx-4090", "dgx-spark", "h100", "strix-halo-128gb"] + TEXT[:6]),
                          ("--gpus", NUMS), ("--engine", ENGINES + TEXT[:4]),
                          ("--quant", ["q4_k_m", "fp8"] + TEXT[:4])):
            if rng.random() < 0.1:
                argv += [opt, rng.choice(pool)]
        env["XDG_CONFIG_HOME"] = str(out / "xdg")
        if rng.random() < 0.3:  # a profile to update: hostile, or a fresh path under out/
            argv += ["--profile", write_profile(rng, out) if rng.random() < 0.4 else str(out / "p" / "profile.yaml")]
        if rng.random() < 0.4:
            argv.append("--dry-run")
        if rng.random() < 0.3:
            argv.append("--json")
        return cmd, argv, env
    if cmd == "detect":
        write_tools(rng, aux / "bin")
        env["PATH"] = f"{aux / 'bin'}:/usr/bin:/bin"
        return cmd, ["detect"] + (["--json"] if rng.random() < 0.5 else []), env
    if cmd == "hub":
        env["HF_HOME"] = str(out / "hf")
        kind = rng.choice(HUB_KINDS)
        name = f"fz/{kind}" + rng.choice(["", "", "@main", "@refs/pr/1", "@0123456789abcdef0123456789abcdef01234567"])
        argv = ["estimate", name, "--gpu", "rtx-4090"] if rng.random() < 0.8 else \
            ["cheapest", name, "-c", "8K", "--gpus", "rtx-4090", "--top", "1", "--time-limit", "5"]
        r = rng.random()
        if r < 0.15:
            argv.append("--offline")
            env["RIGOPT_FUZZ_NO_NET"] = "1"
        elif r < 0.25:
            env["HF_HUB_OFFLINE"] = "1"
            env["RIGOPT_FUZZ_NO_NET"] = "1"
        if rng.random() < 0.3:
            argv.append("--json")
        return cmd, argv, env
    # desktop exports: Ollama (Modelfile + scripts), LM Studio, MLX, from a real or mutated dense llama.cpp plan
    plan = plans["desktop"]
    f = inp / "plan.json"
    r = rng.random()
    if r < 0.45:
        f.write_text(_dump(_mutate_json(rng, plan)))
    elif r < 0.65:
        f.write_text(_dump({**plan, rng.choice(["candidate_id", "model", "kv_dtype", "quant"]):
                            rng.choice(["x\ntouch PWNED\n", "$(touch PWNED)", "`touch PWNED`", "a;touch PWNED"])}))
    else:
        f.write_text(_dump(plan))
    argv = ["export", str(f), "--engine", rng.choice(["ollama", "lmstudio", "mlx"]), "--out", hostile_out()]
    if rng.random() < 0.5:
        argv += ["--model-path", rng.choice(["/m/x.gguf", "$(touch PWNED)", "a b.gguf", "-x", "x\ny", "A" * 5000,
                                             "'\"`", "mlx-community/Qwen3-8B-4bit", "../../etc/passwd"])]
    if rng.random() < 0.3:
        argv.append("--json")
    return cmd, argv, env


def make_old_case(rng: random.Random, cmd: str, case_dir: Path, plans: dict) -> tuple[str, list[str]]:
    inp, out = case_dir / "in", case_dir / "out"
    inp.mkdir(parents=True)
    out.mkdir()
    (case_dir / "aux").mkdir()
    hostile_out = hostile_out_of(rng, inp, out)
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
STUB_NAMES = ("vllm", "python3", "llama-server", "ggml-rpc-server", "ray", "ollama", "lms", "mlx_lm.server",
              "sglang", "curl", "nvidia-smi")


def check_scripts(case_dir: Path) -> list[str]:
    """Run every generated launch script with stub engines first on PATH; report injections."""
    problems = []
    scripts = [p for p in (case_dir / "out").rglob("*.sh")]
    if not scripts:
        return problems
    stub = case_dir / "stubbin"
    stub.mkdir(exist_ok=True)
    for name in STUB_NAMES:
        (stub / name).write_text(STUB)
        (stub / name).chmod(0o755)
    env = {"PATH": f"{stub}:/usr/bin:/bin", "HEAD_IP": "10.0.0.1", "IFACE_NAME": "eth0", "MODEL_PATH": "/m",
           **{f"NODE{i}_IP": f"10.0.0.{i + 1}" for i in range(1, 9)}}
    (case_dir / "cwd").mkdir(exist_ok=True)
    for s in scripts:
        text = s.read_text(errors="replace")
        comments = [ln for ln in text.splitlines() if ln.lstrip().startswith("#")]
        if any(MARK in ln or "$(" in ln or "`" in ln for ln in comments):
            problems.append(f"injection: input text in a comment of {s.name}")
        for arg in (["serve"] if s.name == "ray.sh" else [[]]):
            try:
                subprocess.run(["bash", str(s), *([arg] if arg else [])], cwd=case_dir / "cwd", env=env,
                               capture_output=True, timeout=10)
            except subprocess.TimeoutExpired:
                problems.append(f"a launch script ran past 10 s: {s.name}")
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


# ------------------------------------------------------------------------------------------ network audit
def _net_audit(event: str, args: tuple) -> None:
    """sys.addaudithook, installed in every worker (so in every forked run): a connection or name lookup to anything
    but the fake Hub, or any at all when RIGOPT_FUZZ_NO_NET is set (--offline / HF_HUB_OFFLINE), is logged to
    RIGOPT_FUZZ_NETLOG."""
    if event not in ("socket.connect", "socket.getaddrinfo"):
        return
    log = os.environ.get("RIGOPT_FUZZ_NETLOG")
    if not log:
        return
    if event == "socket.connect":
        addr = args[1]
        if not isinstance(addr, tuple):
            return  # AF_UNIX
        target = f"{addr[0]}:{addr[1]}"
    else:
        target = f"{args[0]}:{args[1]}"
    allowed = set(os.environ.get("RIGOPT_FUZZ_ALLOWED", "").split(","))
    if os.environ.get("RIGOPT_FUZZ_NO_NET") or target not in allowed:
        with open(log, "a") as f:
            f.write(target + "\n")


def run_cli_env(argv: list[str], env: dict, case_dir: Path):
    """run_cli with the case's environment changes (PATH with fake tools, HF_HOME and XDG_CONFIG_HOME under out/,
    offline switches) applied in this worker for the forked child, then restored."""
    from unittest import mock
    with mock.patch.dict(os.environ, {**env, "RIGOPT_FUZZ_NETLOG": str(case_dir / "aux" / "netlog")}):
        return run_cli(argv, cwd=str(case_dir / "cwd"), timeout=HANG_S, mem_cap=3 * GiB, cpu_cap=TIME_LIMIT_S + 5)


def check_run(r, cmd: str) -> list[str]:
    problems = []
    lines = [ln for ln in r.err.splitlines() if ln.strip() and not ln.startswith("solve ")]
    if r.timed_out:
        problems.append(f"slow: hung ({r.seconds:.0f} s of wall time)")
    elif r.cpu_seconds > TIME_LIMIT_S or r.code in (-24, -9):
        problems.append(f"slow: {r.cpu_seconds:.1f} s of CPU")
    if r.max_rss_bytes > MEM_LIMIT:
        problems.append(f"memory: {r.max_rss_bytes / GiB:.2f} GiB")
    if r.traceback:
        problems.append("traceback")
    if r.internal:
        problems.append("internal error")
    allowed = {"solve": {0, 1, 2}, "cheapest": {0, 2, 3}, "fleet": {0, 2, 3}, "mixed": {0, 2, 3}}.get(cmd, {0, 2})
    if not r.timed_out and r.code not in allowed:
        problems.append(f"exit code {r.code}")
    if r.code == 2:
        if len(lines) != 1 or not lines[0].startswith("error: ") or len(lines[0]) >= 300:
            problems.append(f"error line: {len(lines)} line(s), first {lines[0][:80] if lines else ''!r}")
    if any(len(ln) >= 300 for ln in lines):
        problems.append("a stderr line of 300+ characters")
    return problems


def run_case(args: tuple) -> dict:
    i, seed, root, plans, only = args
    case_dir = Path(root) / f"case{i:05d}"
    try:
        cmd, argv, env = make_case(i, seed, case_dir, plans, only)
    except Exception as e:  # a generator bug is the harness's problem, not rigopt's
        return {"i": i, "cmd": "?", "problems": [f"harness: {type(e).__name__}: {e}"], "seconds": 0, "rss": 0}
    (case_dir / "cwd").mkdir()
    before = snapshot(case_dir)
    r = run_cli_env(argv, env, case_dir)
    kind = "fleet" if cmd == "fleet" or (argv[0] == "cheapest") else argv[0]
    problems = check_run(r, kind)
    cpu, rss = r.cpu_seconds, r.max_rss_bytes
    # the profile calibrate wrote is read back by estimate (the same invariants)
    written = [p for p in (case_dir / "out").rglob("profile.yaml")] if cmd == "calibrate" and r.code == 0 else []
    if written:
        r2 = run_cli_env(["estimate", "llama-3.1-8b", "--profile", str(written[0])], env, case_dir)
        problems += [f"{p} (estimate with the written profile)" for p in check_run(r2, "estimate")]
        cpu, rss = max(cpu, r2.cpu_seconds), max(rss, r2.max_rss_bytes)
    netlog = case_dir / "aux" / "netlog"
    if netlog.exists():
        targets = sorted(set(netlog.read_text().split()))
        problems.append(f"network: {len(targets)} target(s) outside the fake Hub: {', '.join(targets)[:120]}")
    after = snapshot(case_dir)
    out_prefix = "out" + os.sep
    for rel, meta in after.items():
        if rel.startswith(out_prefix) or rel == "out" or rel.startswith(("stubbin", "aux")):
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
            "seconds": r.seconds, "cpu": cpu, "rss": rss, "err": r.err[-300:] if problems else ""}


def _preload() -> None:
    """Import and cache everything a command needs once, so every forked case starts warm."""
    import huggingface_hub.file_download  # noqa: F401
    import huggingface_hub.hf_api  # noqa: F401
    import typer.main

    import optimizer.catalog.hub as hub
    import optimizer.cli
    import optimizer.detect  # noqa: F401
    import optimizer.export  # noqa: F401
    import optimizer.export.desktop  # noqa: F401
    import optimizer.export.fleet  # noqa: F401
    import optimizer.export.hetero  # noqa: F401
    import optimizer.fidelity.calibrate  # noqa: F401
    import optimizer.fidelity.report  # noqa: F401
    import optimizer.fidelity.usercal  # noqa: F401
    import optimizer.fleet.report  # noqa: F401
    import optimizer.fleet.solve  # noqa: F401
    import optimizer.hetero.api  # noqa: F401
    import optimizer.place  # noqa: F401
    import optimizer.report.catalog  # noqa: F401
    import optimizer.report.cheapest  # noqa: F401
    import optimizer.report.detect  # noqa: F401
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
    hub.MAX_HUB_TOTAL_S = 1.0  # the trickling fake Hub is cut off after 1 s, not 60 (same code path)
    # typer rebuilds its click command on every call (~80 ms); build it once (the harness only, same command)
    cmd = typer.main.get_command(optimizer.cli.app)
    orig = typer.main.get_command
    typer.main.get_command = lambda t: cmd if t is optimizer.cli.app else orig(t)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--cases", type=int, default=2000)
    ap.add_argument("--seed", type=int, default=14)
    ap.add_argument("--jobs", type=int, default=min(2, os.cpu_count() or 1))
    ap.add_argument("--json", action="store_true", help="print the summary as JSON")
    ap.add_argument("--only", default="", help="generate cases for this one command (debugging)")
    a = ap.parse_args(argv)
    t0 = time.perf_counter()
    _preload()
    root = Path(tempfile.mkdtemp(prefix="rigopt-fuzz-"))
    from tests.fake_hub import FakeHub
    with FakeHub() as hub, FakeHub() as other:  # served by threads of this process; the workers are forks
        hub.repos.update(hub_repos(other.url))
        other.repos.update(hub_repos(other.url))
        saved = {k: os.environ.get(k) for k in ("HF_ENDPOINT", "RIGOPT_FUZZ_ALLOWED", "HF_HUB_OFFLINE", "HF_TOKEN")}
        os.environ["HF_ENDPOINT"] = hub.url
        os.environ["RIGOPT_FUZZ_ALLOWED"] = hub.url.split("//", 1)[1]
        os.environ.pop("HF_HUB_OFFLINE", None)
        os.environ.pop("HF_TOKEN", None)
        try:
            plans = real_plans()
            import multiprocessing
            ctx = multiprocessing.get_context("fork")
            with ProcessPoolExecutor(max_workers=a.jobs, mp_context=ctx, initializer=sys.addaudithook,
                                     initargs=(_net_audit,)) as pool:
                jobs = [(i, a.seed, str(root), plans, a.only) for i in range(a.cases)]
                results = list(pool.map(run_case, jobs, chunksize=4))
        finally:
            shutil.rmtree(root, ignore_errors=True)
            for k, v in saved.items():
                if v is None:
                    os.environ.pop(k, None)
                else:
                    os.environ[k] = v
        other_hits = len(other.log)
    for r in results:
        r.setdefault("cpu", 0.0)
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
        "network_attempts": kinds["network"] + other_hits, "other_host_requests": other_hits,
        "bad_exit_codes": kinds["exit"], "bad_error_lines": kinds["error"] + kinds["a"],
        "harness_errors": kinds["harness"],
        "cpu_s_by_command": {c: round(sum(r["cpu"] for r in results if r["cmd"] == c), 1)
                             for c in sorted({r["cmd"] for r in results})},
        "cpu_s_total": round(sum(r["cpu"] for r in results), 1),
        "slowest_cpu_s": round(max(r["cpu"] for r in results), 2),
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
              f"injections {summary['injections']}, escapes {summary['escapes']}, network attempts outside the "
              f"fake Hub {summary['network_attempts']}, over 10 s of CPU {summary['over_10s']}, "
              f"over 1 GiB {summary['over_1GiB']}, bad exit codes {summary['bad_exit_codes']}, "
              f"bad error lines {summary['bad_error_lines']}; slowest {summary['slowest_cpu_s']} CPU-s, "
              f"peak {summary['peak_rss_MiB']} MiB, {summary['cpu_s_total']} CPU-s in all")
        slow = max(results, key=lambda r: r["cpu"])
        print(f"fuzz: slowest case {slow['i']} ({slow['cmd']}, {slow['cpu']:.2f} CPU-s): {slow.get('argv')}")
        for r in failed[:15]:
            print(f"  case {r['i']} {r['cmd']} {r['argv']}: {r['problems']} | {r['err'][-200:]!r}")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
