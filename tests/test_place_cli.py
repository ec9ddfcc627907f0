import json

import pytest

from optimizer.errors import InputError
from optimizer.place.export import parse_sglang_map
from optimizer.place.report import run, write_outputs


def _hand(tmp_path, **kw):
    d = dict(model="deepseek-v4-flash", n_gpus=16, ep_size=16, tp=8, dp=2, node="hgx-h200-8", n_nodes=2,
             engine="sglang", headroom_bytes=20e9, concurrency=32)
    d.update(kw)
    f = tmp_path / "plan.json"
    f.write_text(json.dumps(d))
    return str(f)


def test_hand_plan_sglang_export(tmp_path):
    r = run(_hand(tmp_path), "zipf:1.0", seed=1, redundant="16")
    assert r.ep.redundant_per_layer == 16 and r.granularity == "expert"
    assert r.ep.layers_worse_than_greedy == 0
    out = tmp_path / "place.json"
    paths = write_outputs(r, str(out))
    rows = parse_sglang_map(open(paths[1]).read())
    assert len(rows) == 43 and all(len(x) == 256 + 16 and set(x) == set(range(256)) for x in rows)
    assert json.loads(out.read_text())["schema_id"] == "rigopt.place/1"


def test_redundant_rounded_for_engine_and_memory(tmp_path):
    r = run(_hand(tmp_path), "uniform", redundant="20")
    assert r.ep.redundant_per_layer == 16 and any("divisible" in n for n in r.notes)
    r = run(_hand(tmp_path, headroom_bytes=0.0), "uniform", redundant="16")
    assert r.ep.redundant_per_layer == 0 and any("headroom" in n for n in r.notes)


def test_memory_per_device_respected(tmp_path):
    from optimizer.place.inputs import expert_bytes_per_layer, read_input
    f = _hand(tmp_path, headroom_bytes=3e9, engine=None)
    r = run(f, "zipf:1.2", redundant="64")
    eb = expert_bytes_per_layer(read_input(f))
    extra = [max(len(s) for s in x.slots) - 256 // 16 for x in r.ep.layers]
    assert sum(e * b for e, b in zip(extra, eb, strict=True)) <= 3e9


def test_offload_plan(tmp_path):
    f = _hand(tmp_path, n_gpus=2, ep_size=2, tp=2, dp=1, node="ws-rtx-4090-2", n_nodes=1, offload_mode="cpu",
              gpu_expert_layers=7, concurrency=1, kv_dtype="fp8", headroom_bytes=None)
    r = run(f, "zipf:1.0")
    assert r.tiers.share["gpu"] > r.tiers.reference_share_gpu
    assert r.tiers.tok_s["load-aware"] >= r.tiers.tok_s["layer-range split"]
    f = _hand(tmp_path, engine="llamacpp", n_gpus=2, ep_size=1, tp=1, pp=2, dp=1, node="ws-rtx-4090-2", n_nodes=1,
              offload_mode="cpu", gpu_expert_layers=10, kv_dtype="f16", quant="q4_k_m-moe", headroom_bytes=None)
    r = run(f, "zipf:1.0")
    assert r.granularity == "layer" and r.exports["llamacpp_ot"][0] == "-ot"


@pytest.mark.parametrize("content", ['{"model": "deepseek-v4-flash"}', "[1]", "{bad"])
def test_bad_plan(tmp_path, content):
    f = tmp_path / "p.json"
    f.write_text(content)
    with pytest.raises(InputError):
        run(str(f))


def test_bad_loads_value(tmp_path):
    with pytest.raises(InputError):
        run(_hand(tmp_path), "zipf:nope")
    with pytest.raises(InputError):
        run(_hand(tmp_path), "uniform", redundant="lots")
