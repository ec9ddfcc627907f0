"""Several boxes (llama.cpp RPC): the `net:` part, the per-token network time by hand, and per-box launch scripts
whose device order and layer ranges, resolved the way llama.cpp 0c1e57098 resolves them, equal the plan's."""

import re
import shlex
import subprocess
import sys
from pathlib import Path

import pytest

from optimizer.catalog.models import resolve_model
from optimizer.errors import InputError
from optimizer.estimate.layers import model_layers
from optimizer.export.hetero import launch_scripts, layer_of_split
from optimizer.hetero import cheapest_mixed
from optimizer.hetero.inventory import parse_inventory
from optimizer.hetero.plan import Stage
from optimizer.hetero.validate import check_plan

FLAGS = Path(__file__).parent / "data" / "engine_flags" / "llamacpp-0c1e57098.txt"


def allow(prog: str) -> dict[str, str]:
    out = {}
    for line in FLAGS.read_text().splitlines():
        if not line or line.startswith("#"):
            continue
        rpc = line.startswith("ggml-rpc-server ")
        if rpc != (prog == "ggml-rpc-server"):
            continue
        parts = line.removeprefix("ggml-rpc-server ").split("\t")
        out[parts[0]] = parts[1]
    return out


def parse(text: str) -> tuple[dict[str, str], list[str]]:
    env = dict(re.findall(r"^export (\w+)=(\S+)$", text, re.M))
    body = text.split("exec ", 1)[1].replace("\\\n", " ")
    return env, shlex.split(body)  # shlex does not expand ${NODE1_IP}: endpoints stay comparable strings


def opt(argv: list[str], flag: str) -> str:
    return argv[argv.index(flag) + 1]


def test_net_part_and_default():
    inv = parse_inventory("box1: 1x rtx-4090, 64GB ddr5; box2: 1x rtx-3090; net: 25gbe")
    assert inv.link == "eth-25g" and inv.link_given and [b.name for b in inv.boxes] == ["box1", "box2"]
    inv = parse_inventory("box1: 1x rtx-4090; box2: 1x rtx-3090")
    assert inv.link == "eth-1g" and not inv.link_given  # the default: the slowest onboard NIC
    for bad, msg in (
        ("box1: 1x rtx-4090; net: 7gbe", "unknown network"),
        ("box1: 1x rtx-4090; net: pcie4-x16", "unknown network"),  # a host link is not a network between boxes
        ("box1: 1x rtx-4090; net: 10gbe; net: 25gbe", "given twice"),
        ("net: 10gbe", "names no box"),
        ("b" * 40 + ": 1x rtx-4090", "longer than"),
    ):
        with pytest.raises(InputError, match=msg):
            parse_inventory(bad)


def _two_stage(inv_text: str, order: tuple[int, int]):
    """qwen3-30b-a3b (48 layers, hidden 2048, vocab 151936: reference configs/Qwen--Qwen3-30B-A3B_config.json) at
    q8_0 / 8K on two one-GPU boxes, 24 layers per box, all experts on the GPUs, boxes in `order`."""
    m = resolve_model("qwen3-30b-a3b")
    ml = model_layers(m, "q8_0", "llamacpp", 8192, 1)
    inv = parse_inventory(inv_text)
    moe = [l for l in range(48) if ml.layers[l].is_moe]
    stages = []
    for i, b in enumerate(order):
        lo, hi = 24 * i, 24 * (i + 1)
        stages.append(
            Stage(
                uid=f"{inv.boxes[b].name}/cuda0",
                box=b,
                accelerator="rtx-4090",
                owned=True,
                start=lo,
                end=hi,
                gpu_expert_layers=tuple(l for l in moe if lo <= l < hi),
                cpu_expert_layers=(),
                nvme_expert_layers=(),
            )
        )
    return check_plan(m, ml, inv, tuple(stages), (0,) * len(inv.boxes))


def test_network_time_per_token_by_hand():
    # 10 GbE row of hardware/interconnects.yaml: 1.25e9 B/s, 30e-6 s per crossing. llama.cpp's hidden state is F32:
    # 2048 x 4 B = 8192 B per token; logits F32: 151936 x 4 B = 607744 B.
    inv = "box1: 1x rtx-4090, 64GB ddr5; box2: 1x rtx-4090; net: 10gbe"
    act_s = 8192 / 1.25e9 + 30e-6
    # box1 (main) first, box2 last: the hidden state goes to box2 (one crossing), box2 holds the output head, so the
    # logits come back instead of the hidden state: act + latency + logits / bw
    c = _two_stage(inv, (0, 1))
    assert c.terms_s["network_hops"] == pytest.approx(act_s + 30e-6 + 607744 / 1.25e9, rel=1e-12)
    # box2 first: the embeddings (computed on box1) cross to box2 and the hidden state crosses back: 2 x act
    c = _two_stage(inv, (1, 0))
    assert c.terms_s["network_hops"] == pytest.approx(2 * act_s, rel=1e-12)
    # one box: no network
    one = _two_stage("box1: 2x rtx-4090, 64GB ddr5", (0, 0))
    assert one.terms_s["network_hops"] == 0.0


def test_solver_and_check_agree_on_the_network_and_a_faster_link_is_never_slower():
    base = "box1: 1x rtx-4090, 128GB ddr5; box2: 1x rtx-4090"
    slow = cheapest_mixed("qwen3-30b-a3b", base + "; net: 2.5gbe", context=8192, quants=["q8_0"])
    fast = cheapest_mixed("qwen3-30b-a3b", base + "; net: 100gbe", context=8192, quants=["q8_0"])
    for r in (slow, fast):
        assert r.check.ok and {s.box for s in r.plan.stages} == {0, 1}  # 2 x 24 GB: q8_0 (~32 GB) needs both
    assert fast.plan.tok_s >= slow.plan.tok_s
    # 2.5 GbE (0.3125e9 B/s, 50e-6 s): the solver keeps the last layer on box1, so two crossings of 8192 B
    assert slow.plan.stages[-1].box == 0
    assert slow.check.terms_s["network_hops"] == pytest.approx(2 * (8192 / 0.3125e9 + 50e-6), rel=1e-12)


def resolve_devices(scripts: list[tuple[str, str]], plan):
    """Per layer, the (box, physical CUDA index) llama.cpp puts it on, and per buffer type the same, from the
    scripts alone (src/llama.cpp: --device order; ggml-rpc.cpp: RPC<j> names, RPC<i>[endpoint] buffer types)."""
    env, argv = parse(scripts[0][1])
    assert argv[0] == "llama-server"
    visible = [int(x) for x in env["CUDA_VISIBLE_DEVICES"].split(",") if x]
    servers: dict[str, tuple[int, list[int]]] = {}
    for _, text in scripts[1:]:
        _, rargv = parse(text)
        assert rargv[0] == "ggml-rpc-server"
        a = allow("ggml-rpc-server")
        i = 1
        while i < len(rargv):
            assert rargv[i] in a, rargv[i]
            i += 1 if a[rargv[i]] == "flag" else 2
        host = opt(rargv, "-H")
        box = int(re.fullmatch(r"\$\{NODE(\d+)_IP\}", host).group(1))
        servers[f"{host}:{opt(rargv, '-p')}"] = (
            box,
            [int(d.removeprefix("CUDA")) for d in opt(rargv, "-d").split(",")],
        )
    where: dict[str, tuple[int, int]] = {}
    bufts: dict[str, tuple[int, int]] = {}
    for k, c in enumerate(visible):
        where[f"CUDA{k}"] = bufts[f"CUDA{k}"] = (0, c)
    if servers:
        endpoints = opt(argv, "--rpc").split(",")
        assert sorted(endpoints) == sorted(servers)
        j = 0
        for ep in endpoints:
            box, devs = servers[ep]
            for i, c in enumerate(devs):
                where[f"RPC{j}"] = bufts[f"RPC{i}[{ep}]"] = (box, c)
                j += 1
        order = opt(argv, "--device").split(",")
        first_ot = argv.index("-ot") if "-ot" in argv else len(argv)
        assert argv.index("--rpc") < argv.index("--device") < first_ot  # handled in order (common/arg.cpp)
    else:
        order = [f"CUDA{k}" for k in range(len(visible))]
    split = [float(x) for x in opt(argv, "--tensor-split").split(",")]
    assert len(split) == len(order)
    n_layer = plan.stages[-1].end
    layer_dev = [where[order[d]] for d in layer_of_split(split, n_layer)]
    pinned: dict[tuple[int, int] | str, list[int]] = {}
    for k, x in enumerate(argv):
        if x == "-ot":
            pat, target = argv[k + 1].rsplit("=", 1)
            layers = [int(v) for v in re.match(r"blk\\\.\(([\d|]+)\)", pat).group(1).split("|")]
            pinned[bufts.get(target, target)] = sorted(layers)
    return layer_dev, pinned


def _phys(plan, stage) -> tuple[int, int]:
    inv = parse_inventory(plan.inventory)
    return stage.box, next(g.cuda for g in inv.boxes[stage.box].gpus if g.uid == stage.uid)


@pytest.mark.parametrize(
    "inventory,context,kw",
    [
        ("box1: 2x rtx-4090, 128GB ddr5; box2: 1x rtx-3090, 64GB ddr4; net: 10gbe", 131072, {"tok_s": 5}),
        ("box1: 1x rtx-4090, 128GB ddr5; box2: 1x rtx-4090", 8192, {"quants": ["q8_0"]}),
    ],
)
def test_per_box_scripts_reproduce_the_plan(inventory, context, kw):
    model = "deepseek-v4-flash" if "ddr4" in inventory else "qwen3-30b-a3b"
    r = cheapest_mixed(model, inventory, context=context, confidence=0, **kw)  # expected figures: scripts are tested
    p = r.plan
    assert r.check.ok and len({s.box for s in p.stages}) == 2
    scripts = launch_scripts(p)
    assert [b for b, _ in scripts] == ["box1", "box2"]  # the engine's box first, then the RPC box
    a = allow("llama-server")
    _, argv = parse(scripts[0][1])
    i = 1
    while i < len(argv):
        assert argv[i] in a, f"{argv[i]} is not a flag of the pinned llama.cpp"
        i += 1 if a[argv[i]] in ("flag", "bool") else 2
    layer_dev, pinned = resolve_devices(scripts, p)
    for s in p.stages:
        assert {layer_dev[l] for l in s.layers} == {_phys(p, s)}, s.uid
        assert pinned.get(_phys(p, s), []) == sorted(s.gpu_expert_layers), s.uid
    assert pinned.get("CPU", []) == sorted(l for s in p.stages for l in s.cpu_expert_layers + s.nvme_expert_layers)


@pytest.mark.slow
def test_multi_box_cli_writes_one_script_per_box(tmp_path):
    out = tmp_path / "run.sh"
    cmd = [
        sys.executable,
        "-m",
        "optimizer",
        "mixed",
        "qwen3-30b-a3b",
        "--owned",
        "box1: 1x rtx-4090, 128GB ddr5; box2: 1x rtx-4090; net: 10gbe",
        "--context",
        "8K",
        "--quant",
        "q8_0",
        "--export",
        str(out),
    ]
    res = subprocess.run(cmd, capture_output=True, text=True, timeout=120)
    assert res.returncode == 0, res.stderr
    assert sorted(p.name for p in tmp_path.iterdir()) == ["run.box2.sh", "run.sh"]
    assert "ggml-rpc-server" in (tmp_path / "run.box2.sh").read_text()
    assert "--rpc" in out.read_text()


def test_vllm_over_boxes_is_one_error():
    with pytest.raises(InputError, match="llama.cpp RPC"):
        cheapest_mixed("qwen3-30b-a3b", "box1: 1x rtx-4090; box2: 1x rtx-3090", context=8192, engine="vllm")
