"""llama.cpp export of mixed plans: flags exist in the pinned llama.cpp, values are shell-quoted, and the device
ranges llama.cpp derives from the script equal the plan's."""

import re
import shlex
from pathlib import Path

import pytest

from optimizer.export.hetero import command, launch_script, layer_of_split
from optimizer.hetero import cheapest_mixed

FLAGS = Path(__file__).parent / "data" / "engine_flags" / "llamacpp-0c1e57098.txt"


def allow():
    out = {}
    for line in FLAGS.read_text().splitlines():
        if line and not line.startswith("#") and not line.startswith("ggml-rpc-server "):
            parts = line.split("\t")
            out[parts[0]] = parts[1]
    return out


@pytest.fixture(scope="module")
def plans():
    return [
        # on the expected figures (confidence=0): the plan's experts are on the CPU, and the cpu-experts interval's
        # low end (near x0.04) would leave no plan; the flags and ranges of its script are what is tested
        cheapest_mixed("deepseek-v4-flash", "1x rtx-4090, 1x rtx-3090, 128GB ddr5", context=393216, tok_s=10,
                       confidence=0).plan,
        cheapest_mixed(
            "deepseek-v4-flash", "2x rtx-3090, 1x rtx-a6000, 64GB ddr5, 2TB nvme", context=65536, quants=["q4_k_m-moe"]
        ).plan,
    ]


def parse_script(text: str):
    env = dict(re.findall(r"^export (\w+)=(\S+)$", text, re.M))
    body = text.split("exec ", 1)[1].replace("\\\n", " ")
    return env, shlex.split(body)


def test_flags_exist_and_values_quoted(plans):
    a = allow()
    for p in plans:
        argv = [str(x) for x in command(p).argv][1:]
        i = 0
        while i < len(argv):
            assert argv[i] in a, f"{argv[i]} is not a flag of the pinned llama.cpp"
            i += 1 if a[argv[i]] in ("flag", "bool") else 2
        text = launch_script(p)
        for line in text.splitlines():
            if "-ot " in line:
                assert re.search(r"-ot '[^']+'", line), line  # regexes are single-quoted by shlex


def test_script_ranges_equal_plan(plans):
    for p in plans:
        assert len(p.stages) >= 2
        env, argv = parse_script(launch_script(p))
        split = [float(x) for x in argv[argv.index("--tensor-split") + 1].split(",")]
        n_layer = p.stages[-1].end
        dev_of = layer_of_split(split, n_layer)
        for i, s in enumerate(p.stages):
            assert [l for l in range(n_layer) if dev_of[l] == i] == list(s.layers)
        # -ot: each stage's GPU experts pinned to its CUDA<i>, DRAM/NVMe experts to CPU
        pinned = {}
        for k, x in enumerate(argv):
            if x == "-ot":
                pat, target = argv[k + 1].rsplit("=", 1)
                layers = [int(v) for v in re.match(r"blk\\\.\(([\d|]+)\)", pat).group(1).split("|")]
                pinned[target] = sorted(layers)
        for i, s in enumerate(p.stages):
            assert pinned.get(f"CUDA{i}", []) == sorted(s.gpu_expert_layers)
        host = sorted(l for s in p.stages for l in s.cpu_expert_layers + s.nvme_expert_layers)
        assert pinned.get("CPU", []) == host
        # device order: the stages' CUDA indices, in stage order
        assert env["CUDA_VISIBLE_DEVICES"].split(",") == [s.uid.split("cuda")[1] for s in p.stages]


def test_llamacpp_split_rule_is_exact():
    # 6 + 38 layers, output counted on the last device: layer 5 -> device 0, layer 6 -> device 1
    dev = layer_of_split([6, 38], 43)
    assert dev[5] == 0 and dev[6] == 1 and dev[-1] == 1


def test_vllm_mixed_plan_export():
    vflags = {}
    for line in (FLAGS.parent / "vllm-0.33.0.txt").read_text().splitlines():
        if line and not line.startswith("#"):
            parts = line.split("\t")
            vflags[parts[0]] = parts[1]
    r = cheapest_mixed(
        "qwen3-30b-a3b",
        "1x rtx-4090, 1x rtx-3090, 1x rtx-a6000, 64GB ddr5",
        context=32768,
        concurrency=4,
        engine="vllm",
    )
    p = r.plan
    assert r.check.ok and len(p.stages) == 3
    assert all(not s.cpu_expert_layers and not s.nvme_expert_layers for s in p.stages)
    env, argv = parse_script(launch_script(p))
    assert argv[:2] == ["vllm", "serve"]
    flags = argv[3:]
    i = 0
    while i < len(flags):
        assert flags[i] in vflags, flags[i]
        i += 1 if vflags[flags[i]] in ("flag", "bool") else 2
    assert argv[argv.index("--pipeline-parallel-size") + 1] == "3"
    # get_pp_indices: stage i owns [sum(p[:i]), sum(p[:i+1]))
    part = [int(x) for x in env["VLLM_PP_LAYER_PARTITION"].split(",")]
    starts = [sum(part[:i]) for i in range(len(part))]
    assert [(st, st + n) for st, n in zip(starts, part, strict=True)] == [(s.start, s.end) for s in p.stages]
    assert env["CUDA_VISIBLE_DEVICES"].split(",") == [s.uid.split("cuda")[1] for s in p.stages]


def test_engine_rules():
    from optimizer.errors import InputError

    with pytest.raises(InputError, match="vllm cannot run deepseek-v4-flash on any card"):
        cheapest_mixed("deepseek-v4-flash", "2x rtx-4090, 1x rtx-3090, 64GB ddr5", context=32768, engine="vllm")
    with pytest.raises(InputError, match="sglang does not run one model across GPU types"):
        cheapest_mixed("qwen3-30b-a3b", "1x rtx-4090, 1x rtx-3090", context=32768, engine="sglang")
