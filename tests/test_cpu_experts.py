"""Experts computed by the host CPU (optimizer/estimate/cpu_experts.py) and the host as an input
(optimizer/catalog/host_spec.py): hand calculations on named hosts, channel population, NUMA, threads, each engine's
combine rule, the prefill stream-vs-CPU choice, the CLI lines and the host spec parser."""

import json
import subprocess
import sys

import pytest
from typer.testing import CliRunner

from optimizer.catalog.hardware import get_node
from optimizer.catalog.host_spec import HostSpec, host_spec_from_measurement, parse_host
from optimizer.cli import app
from optimizer.errors import InputError
from optimizer.estimate import cpu_experts as C
from optimizer.estimate import factors as F
from optimizer.estimate.kv import kv_estimate
from optimizer.estimate.schemes import get_scheme
from optimizer.estimate.speed import Device, ExpertTiers, decode_speed, prefill_time
from optimizer.estimate.weights import weight_breakdown
from optimizer.layout import Links, Parallel
from optimizer.topology import topology
from optimizer.topology_links import plan_links

runner = CliRunner()
GENOA = "epyc-9004-12ch-ddr5-4800"  # EPYC 9654: 96 cores, 2.4 GHz, AVX-512, 12 x DDR5-4800


def eff(engine: str, cls: str) -> float:
    return F.cpu_expert_bw_efficiency(engine, cls).value


def test_expert_time_on_one_genoa_socket_by_hand():
    host = HostSpec(cpu=GENOA).resolve()
    assert host.socket_bw_bytes_per_s == pytest.approx(12 * 4800e6 * 8)  # 460.8 GB/s
    assert host.host_class == "server" and host.isa == "avx512"
    t = C.expert_time(host, "llamacpp", bytes_read=10e9, flops=50e12)
    # bytes / (460.8 GB/s x llama.cpp's server efficiency)
    assert t.dram_s == pytest.approx(10e9 / (460.8e9 * eff("llamacpp", "server")))
    # FLOPs / (96 cores x 2.4 GHz x 256 int8 ops per cycle (AVX-512 VNNI) x compute efficiency)
    rate = 96 * 2.4e9 * 256 * F.CPU_EXPERT_COMPUTE_EFFICIENCY.value
    assert t.compute_s == pytest.approx(50e12 / rate)
    assert t.time_s == max(t.dram_s, t.compute_s)
    assert t.binding == ("cpu compute" if t.compute_s > t.dram_s else "host DRAM bandwidth")


def test_amx_and_bf16_paths_change_only_the_compute_rate():
    spr = HostSpec(cpu="xeon-spr-8ch-ddr5-4800").resolve()
    amx_int8 = C.compute_rate(spr, "sglang", "int8")
    amx_bf16 = C.compute_rate(spr, "sglang", "bf16")
    assert amx_int8 == pytest.approx(56 * 2.0e9 * 2048 * F.CPU_EXPERT_COMPUTE_EFFICIENCY.value)
    assert amx_int8 == pytest.approx(2 * amx_bf16)
    assert C.kernel_path("sglang", {"mxfp4"}) == "bf16" and C.kernel_path("llamacpp", {"mxfp4"}) == "int8"


def test_headline_node_populates_two_thirds_of_the_channels():
    node = get_node("pcie-l40s-8")
    links = plan_links(node, 1, Parallel(tp=8, ep=True))
    assert links.host is not None and links.host.channels_populated == 8 and links.host.sockets == 2
    # 16 DIMMs on 2 x 12 channels: 8 x 4800 MT/s x 8 B = 307.2 GB/s per socket, 2/3 of a full socket
    assert links.host.socket_bw_bytes_per_s == pytest.approx(307.2e9)
    assert topology(node.key, 1).host_dram_bandwidth() == pytest.approx(2 * 307.2e9)
    full = HostSpec(cpu=GENOA, sockets=2).resolve()
    assert links.host.socket_bw_bytes_per_s / full.socket_bw_bytes_per_s == pytest.approx(2 / 3)


def test_numa_interleave_is_capped_by_the_socket_link_and_per_socket_is_not():
    two = HostSpec(cpu=GENOA, sockets=2).resolve()
    link = two.socket_link_bw_bytes_per_s
    per_socket = 460.8e9 * eff("ktransformers", "server-2s")
    kt = C.host_bandwidth(two, "sglang")  # KTransformers: one thread pool per NUMA node, local reads
    assert kt.bytes_per_s == pytest.approx(2 * per_socket)
    lc = C.host_bandwidth(two, "llamacpp")  # pages striped: half of each socket's reads cross the link
    assert lc.bytes_per_s == pytest.approx(2 * min(460.8e9 * eff("llamacpp", "server-2s"), link * 2))
    single = C.host_bandwidth(HostSpec(cpu=GENOA, sockets=2, numa="single").resolve(), "llamacpp")
    assert single.bytes_per_s == pytest.approx(460.8e9 * eff("llamacpp", "server"))
    assert single.theoretical == pytest.approx(460.8e9)


def test_efficiency_class_counts_the_sockets_in_use():
    """Two sockets in use (per-socket or interleaved NUMA) take the server-2s efficiency; the same host pinned to one
    socket takes the single-socket server one, and a desktop stays a desktop."""
    two = HostSpec(cpu=GENOA, sockets=2).resolve()
    assert two.host_class == "server"
    for engine in ("sglang", "llamacpp", "ik_llama"):
        assert C.efficiency_class(two, engine) == "server-2s"
        assert C.host_bandwidth(two, engine).host_class == "server-2s"
        assert C.host_bandwidth(two, engine).efficiency == eff(C.cpu_engine(engine), "server-2s")
    pinned = HostSpec(cpu=GENOA, sockets=2, numa="single").resolve()
    assert C.efficiency_class(pinned, "llamacpp") == "server"
    assert C.host_bandwidth(pinned, "llamacpp").efficiency == eff("llamacpp", "server")
    assert C.efficiency_class(HostSpec(cpu=GENOA).resolve(), "sglang") == "server"
    assert C.efficiency_class(C.generic_host(80e9), "llamacpp") == "desktop"
    # the fitted single- and dual-socket factors differ (the dual-socket one lower: cross-socket traffic)
    assert eff("ktransformers", "server-2s") < eff("ktransformers", "server")


def test_threads_and_measured_bandwidth():
    few = HostSpec(cpu=GENOA, threads=1).resolve()  # one thread's cap is below the fitted DRAM efficiency's share
    bw = C.host_bandwidth(few, "llamacpp")
    assert bw.limit == "threads" and bw.bytes_per_s == pytest.approx(F.PER_THREAD_DRAM_BW.value)
    meas = HostSpec(cpu=GENOA, sockets=2, numa="per-socket", measured_bw_gb_s=700).resolve()
    # the efficiency is a share of the theoretical peak and a measured figure is STREAM_OF_PEAK of it: the engine
    # reaches eff / STREAM_OF_PEAK of the measured 700 GB/s (not eff x 700, which would count the gap twice)
    got = C.host_bandwidth(meas, "llamacpp")
    share = min(1.0, eff("llamacpp", "server-2s") / F.STREAM_OF_PEAK.value)
    assert got.bytes_per_s == pytest.approx(700e9 * share)
    assert got.efficiency == eff("llamacpp", "server-2s")  # the fitted factor itself, in peak units
    assert "measured 700 GB/s" in meas.basis
    # a host measured at exactly STREAM_OF_PEAK of its theoretical peak gets what the derived peak would give
    peak = HostSpec(cpu=GENOA, sockets=2, numa="per-socket").resolve()
    same = HostSpec(cpu=GENOA, sockets=2, numa="per-socket",
                    measured_bw_gb_s=2 * 460.8 * F.STREAM_OF_PEAK.value).resolve()
    assert C.host_bandwidth(same, "llamacpp").bytes_per_s == pytest.approx(
        C.host_bandwidth(peak, "llamacpp").bytes_per_s)


def test_combine_rules():
    assert C.exposed_time("llamacpp", 0.05, 40, 0.001) == 0.05  # serial: every millisecond counts
    assert C.exposed_time("ik_llama", 0.05, 40, 0.001) == 0.05
    assert C.exposed_time("sglang", 0.05, 40, 0.001) == pytest.approx(0.05 - 40 * 0.001)  # overlapped
    assert C.exposed_time("sglang", 0.01, 40, 0.001) == 0.0


def test_decode_step_adds_cpu_experts_for_llamacpp_and_overlaps_them_for_ktransformers(spec_of):
    m = spec_of("deepseek-v3")
    w = weight_breakdown(m.spec, get_scheme("q4_k_m"))
    dev = Device("rtx-4090", 1.008e12, 165e12)
    host = HostSpec(cpu=GENOA, sockets=2).resolve()
    links = Links(host_dram_bw=host.theoretical_bw_bytes_per_s, host=host, host_link_bw=32e9)
    tiers = ExpertTiers(gpu=0.0, cpu=1.0)
    out = {}
    for engine in ("llamacpp", "sglang"):
        kv = kv_estimate(m.spec, engine, "bf16" if engine == "sglang" else "f16")
        out[engine] = decode_speed(m.spec, w, kv, dev, par=Parallel(), context=4096, links=links, tiers=tiers,
                                   engine=engine)
    lc, kt = out["llamacpp"], out["sglang"]
    assert lc.terms_s["cpu_experts"] == pytest.approx(lc.cpu_experts.time_s)
    # hand figure: 58 MoE layers x 8 experts x bytes per expert, at llama.cpp's interleaved bandwidth
    moe = m.spec.moe_layers
    eb = w.per_layer_experts[m.spec.main_layers.index(moe[0])] / moe[0].n_routed_experts
    bytes_read = len(moe) * moe[0].experts_per_token * eb
    assert lc.cpu_experts.dram_s == pytest.approx(bytes_read / C.host_bandwidth(host, "llamacpp").bytes_per_s)
    shared = w.by_class.get("shared_experts", 0.0) / len(moe)
    hidden = len(moe) * shared / (dev.mem_bw_bytes_per_s * dev.bw_efficiency)
    assert kt.terms_s["cpu_experts"] == pytest.approx(max(0.0, kt.cpu_experts.time_s - hidden))
    assert kt.cpu_experts.exposed_s < kt.cpu_experts.time_s


def test_prefill_streams_or_computes_by_the_engines_rule(spec_of):
    assert C.prefill_streams("llamacpp", 512) and not C.prefill_streams("llamacpp", 16)
    # KTransformers' own SGLang builds: layerwise GPU prefill above --kt-gpu-prefill-token-threshold; SGLang 0.5.23
    # (what rigopt exports) has no such flag and computes every forward's CPU experts on the CPU (kt_ep_wrapper.py)
    assert C.prefill_streams("sglang", 4096, kt_threshold=1024)
    assert not C.prefill_streams("sglang", 512, kt_threshold=1024)
    assert not C.prefill_streams("sglang", 4096) and not C.prefill_streams("sglang", 4096, kt_threshold=0)
    assert C.prefill_streams("vllm", 1)
    # ik_llama.cpp: batch x active >= 32 x total experts (DeepSeek 256 / 8: from 1,024 tokens)
    assert not C.prefill_streams("ik_llama", 512, 256, 8) and C.prefill_streams("ik_llama", 1024, 256, 8)
    assert C.prefill_streams("ik_llama", 512, 128, 8) and not C.prefill_streams("ik_llama", 16, 128, 8)
    assert C.stream_links("llamacpp", 8) == 1 and C.stream_links("sglang", 8) == 8
    m = spec_of("deepseek-v3")
    w = weight_breakdown(m.spec, get_scheme("q4_k_m"))
    dev = Device("rtx-4090", 1.008e12, 165e12)
    host = HostSpec(cpu=GENOA).resolve()
    links = Links(host_dram_bw=host.theoretical_bw_bytes_per_s, host=host, host_link_bw=32e9)
    tiers = ExpertTiers(gpu=0.0, cpu=1.0)
    big = prefill_time(m.spec, w, dev, par=Parallel(), prompt_tokens=4096, links=links, tiers=tiers,
                       engine="llamacpp", chunk_tokens=512)
    small = prefill_time(m.spec, w, dev, par=Parallel(), prompt_tokens=4096, links=links, tiers=tiers,
                         engine="llamacpp", chunk_tokens=16)
    assert big.expert_path == "stream" and small.expert_path == "cpu"
    # streamed: 8 chunks each copy every touched expert (all 256 of a layer at 512 tokens) over one x16 link
    touched = 1.0 - (1.0 - 8 / 256) ** 512
    assert big.expert_stream_s == pytest.approx(8 * w.routed_expert_bytes * touched / 32e9
                                                / F.PCIE_EFFICIENCY.value, rel=1e-6)
    # computed on the CPU: serial with the GPU part for llama.cpp below its batch threshold
    assert small.ttft_s >= small.expert_cpu_s
    assert small.expert_cpu_s > 0 and big.expert_cpu_s > 0


def test_parse_host_forms(tmp_path):
    assert parse_host(GENOA) == HostSpec(cpu=GENOA)
    s = parse_host(f"{GENOA}:sockets=2,channels=8,mt=4800,numa=interleave,bw=500,threads=96")
    assert (s.sockets, s.channels_populated, s.dimm_mt_s, s.numa, s.measured_bw_gb_s, s.threads) == \
        (2, 8, 4800, "interleave", 500.0, 96)
    c = parse_host("cpu=AMD EPYC 9654,sockets=2").resolve()  # a CPU model maps to its platform row
    assert c.isa == "avx512" and c.channels_populated == 12 and c.sockets == 2
    f = tmp_path / "host.yaml"
    f.write_text("cpu: Intel Xeon 8480+\nsockets: 2\nchannels_populated: 8\ndimm_mt_s: 4800\n")
    assert parse_host(str(f)).resolve().isa == "amx"  # Sapphire Rapids
    m = host_spec_from_measurement({"cpu": "AMD Ryzen 9 7950X", "cpu_count": 1, "memory_channels_populated": 2,
                                    "dimm_mt_s": 6000, "numa": None, "threads": 16})
    r = m.resolve()
    assert r.host_class == "desktop" and r.socket_bw_bytes_per_s == pytest.approx(2 * 6000e6 * 8)


@pytest.mark.parametrize("bad", ["no-such-host", f"{GENOA}:channels=13", f"{GENOA}:bogus=1", "sockets=2",
                                 "cpu=Mystery CPU 3000", f"{GENOA}:numa=sideways", "missing.yaml", ""])
def test_parse_host_rejects(bad):
    with pytest.raises(InputError):
        parse_host(bad).resolve()


@pytest.mark.parametrize("bad", ["no-such-host", f"{GENOA}:channels=13", "cpu=Mystery CPU 3000"])
def test_cli_bad_host_is_one_error_line(bad):
    r = subprocess.run([sys.executable, "-m", "optimizer", "estimate", "deepseek-v3", "--gpu", "rtx-4090",
                        "--n-cpu-moe", "58", "-e", "llamacpp", "-q", "q4_k_m", "-c", "8K", "--host", bad],
                       capture_output=True, text=True, timeout=120)
    assert r.returncode == 2, r.stdout + r.stderr
    lines = [x for x in (r.stdout + r.stderr).splitlines() if x.strip()]
    assert len(lines) == 1 and lines[0].startswith("error:"), lines


@pytest.mark.parametrize("engine", ["llamacpp", "sglang"])
def test_cli_estimate_prints_the_cpu_expert_lines(engine):
    args = ["estimate", "deepseek-v3", "--gpu", "rtx-4090", "--n-cpu-moe", "58", "-e", engine, "-q", "q4_k_m",
            "-c", "8K", "--host", f"{GENOA}:sockets=2"]
    r = runner.invoke(app, args)
    assert r.exit_code == 0, r.output
    assert f"cpu experts ({GENOA}, avx512):" in r.output and "binding term:" in r.output
    assert "host DRAM bandwidth assumed:" in r.output and "basis: 12 of 12 channels x 4800 MT/s" in r.output
    assert "CPU compute:" in r.output and "prefill experts:" in r.output
    j = json.loads(runner.invoke(app, [*args, "--json"]).output)["hardware"]["decode"]["cpu_experts"]
    assert j["time_s"] == pytest.approx(max(j["dram_s"], j["compute_s"]))
    assert j["dram_bw_bytes_per_s"] < j["dram_bw_theoretical_bytes_per_s"] == pytest.approx(2 * 460.8e9)
    assert j["binding"] in ("host DRAM bandwidth", "cross-socket link", "cpu compute")
    assert ("overlapped" in j["combine"]) == (engine == "sglang")


def test_offload_plans_get_the_cpu_experts_regime_and_never_a_narrower_one():
    from optimizer.catalog.hardware import get_accelerator
    from optimizer.estimate.uncertainty import CPU_EXPERTS_REGIME, interval, regime_keys
    for acc in ("rtx-4090", "h100-sxm", "l40s"):
        a = get_accelerator(acc)
        assert regime_keys("llamacpp", a, 1, offload=True) == [CPU_EXPERTS_REGIME, "*"]
        assert regime_keys("sglang", a, 4, offload=True) == [CPU_EXPERTS_REGIME, "*"]
        iv = interval("decode", "llamacpp", a, 1, 0.8, offload=True)
        assert iv is not None and iv.regime in (CPU_EXPERTS_REGIME, "*")


def test_validate_shows_the_cpu_experts_regime():
    r = runner.invoke(app, ["validate", "--metric", "decode"])
    assert r.exit_code == 0, r.output
    head = next(x for x in r.output.splitlines() if x.startswith("metric"))
    assert "signed" in head and "cov80" in head
    row = next(x for x in r.output.splitlines() if x.startswith("decode_tok_s") and " cpu-experts " in x)
    n_rows = int(row.split()[2])
    assert n_rows >= 1


def test_owned_host_reaches_the_candidates_and_the_check():
    from optimizer.solver.query import Owned
    o = Owned.parse(f"1x rtx-4090, 256GB ddr5, host {GENOA}:sockets=2;channels=8")
    assert o.host == f"{GENOA}:sockets=2,channels=8"
    with pytest.raises(InputError):
        Owned.parse("1x rtx-4090, host nope")
    speeds = {}
    for host in ("desktop-am5-2ch-ddr5", "desktop-am5-2ch-ddr5:channels=1"):
        r = runner.invoke(app, ["cheapest", "qwen3-235b-a22b", "--context", "8K", "--tok-s", "1", "--json",
                                "--confidence", "0", "--quant", "iq4_xs",
                                "--owned", f"1x rtx-4090, 128GB ddr5, host {host}"])
        assert r.exit_code == 0, r.output
        plan = json.loads(r.output)["plan"]
        assert plan["offload"]["expert_layers_offloaded"] > 0
        speeds[host] = plan["speed"]["tok_s_per_seq"]
    assert speeds["desktop-am5-2ch-ddr5:channels=1"] < speeds["desktop-am5-2ch-ddr5"]


def test_mixed_takes_a_host():
    # --engine llamacpp: the per-device planner (one GPU type without it is `cheapest --owned`'s question)
    base = ["mixed", "qwen3-235b-a22b", "--owned", "1x rtx-4090, 128GB ddr5", "--context", "8K", "--engine",
            "llamacpp", "--json"]
    full = runner.invoke(app, [*base, "--host", "desktop-am5-2ch-ddr5"])
    half = runner.invoke(app, [*base, "--host", "desktop-am5-2ch-ddr5:channels=1"])
    assert full.exit_code == 0 and half.exit_code == 0, full.output + half.output
    f, h = json.loads(full.output), json.loads(half.output)
    # experts in host DRAM: one channel populated instead of two halves the CPU-expert bandwidth
    assert h["tok_s"] < f["tok_s"]
    assert f["trust_regime"].startswith("cpu-experts")


def test_scenario_owned_host(tmp_path):
    from optimizer.scenarios import ScenarioError, load_scenario
    p = tmp_path / "box.yaml"
    p.write_text("model: qwen3-30b-a3b\ncontext: 32K\nowned: {accelerators: {rtx4090: 1}, dram: 128GB, "
                 f"host: '{GENOA}:sockets=2,channels=8'}}\n")
    [q] = load_scenario(p).questions
    assert q.query.owned.host == f"{GENOA}:sockets=2,channels=8"
    s = tmp_path / "str.yaml"
    s.write_text(f"model: qwen3-30b-a3b\ncontext: 32K\nowned: 1x rtx-4090, 128GB ddr5, host {GENOA}\n")
    [q] = load_scenario(s).questions
    assert q.query.owned.host == GENOA
    bad = tmp_path / "bad.yaml"
    bad.write_text("model: qwen3-30b-a3b\ncontext: 32K\nowned: {accelerators: {rtx4090: 1}, host: nope}\n")
    with pytest.raises((ScenarioError, InputError)):
        load_scenario(bad)


def test_cpu_expert_fit_gives_each_source_one_vote_and_one_value_per_host_class():
    from optimizer.fidelity.calibrate import _source_median, cpu_expert_cells
    # four rows of one source at 1% and one row each of two other sources: by row the median would be 1%
    assert _source_median({"a": [0.01, 0.011, 0.012, 0.013], "b": [0.30], "c": [0.50, 0.60]}) == pytest.approx(0.30)
    assert _source_median({"a": [0.2, 0.4], "b": [0.6], "c": [0.1]}) == pytest.approx(0.3)
    assert _source_median({"a": [1.5]}) == 1.0  # an efficiency never exceeds the peak
    doc = {"bw_efficiency": {"server": {"value": 0.3, "rows": 20, "sources": 8},
                             "server-2s": {"value": 0.25, "rows": 12, "sources": 7}}}
    cells = cpu_expert_cells(doc)
    assert {k: v for k, v in cells.items() if k.endswith("/server")} == {
        "llamacpp/server": 0.3, "ik_llama/server": 0.3, "ktransformers/server": 0.3}
    assert cells["ktransformers/server-2s"] == 0.25 and not any(k.endswith("/desktop") for k in cells)


def test_cpu_expert_fit_needs_three_sources_per_class():
    # a class whose rows come from two sources is not fitted: the median of two votes is their mean, which one
    # outlying source would set (its engines then keep the hand estimates)
    from optimizer.fidelity import calibrate
    from optimizer.fidelity.crossval import source_key
    from optimizer.fidelity.heldout import offload_rows
    full = calibrate.fit_cpu_experts()["bw_efficiency"]
    assert full and all(v["sources"] >= calibrate.MIN_CPU_EXPERT_SOURCES == 3 for v in full.values())
    two = set(sorted({source_key(r.get("source")) for r in offload_rows()})[:2])
    assert calibrate.fit_cpu_experts(exclude=lambda s: source_key(s["source"]) not in two)["bw_efficiency"] == {}


def test_cross_validation_folds_back_off_to_the_estimates_never_to_the_full_fit():
    from optimizer.fidelity import crossval
    est = crossval._estimates()
    assert set(est) == {f"{e}/{c}" for e, c in F.CPU_EXPERT_BW_ESTIMATES}
    assert all(f.estimate for f in F.CPU_EXPERT_BW_ESTIMATES.values())
    assert est["llamacpp/server"] == 0.40 and est["ik_llama/desktop"] == 0.65


def test_estimate_warns_when_the_offloaded_experts_exceed_the_hosts_dram():
    # gpt-oss-120b with all 36 expert layers on a 64 GB host: its routed experts alone (about 61 GB, MXFP4) plus the
    # 16 GiB reserve exceed 64 GB; with 128 GB they fit
    args = ["estimate", "gpt-oss-120b", "--gpu", "rtx-3090", "--gpus", "1", "--n-cpu-moe", "36", "--engine",
            "llamacpp", "--quant", "native", "--host"]
    small = runner.invoke(app, [*args, "cpu=AMD EPYC 7343,channels=8,mt=3200,dram=64"])
    assert small.exit_code == 0, small.output
    text = " ".join(small.output.split())
    assert "WARNING: host memory" in text and "host has 64 GB" in text
    from optimizer.catalog.models import resolve_model
    from optimizer.estimate.weights import weight_breakdown
    m = resolve_model("gpt-oss-120b")
    routed = weight_breakdown(m.spec, get_scheme("native", m.storage)).routed_expert_bytes
    assert f"keeps {(routed + F.HOST_RESERVED_BYTES) / 1e9:,.1f} GB" in text
    big = runner.invoke(app, [*args, "cpu=AMD EPYC 7343,channels=8,mt=3200,dram=128"])
    assert big.exit_code == 0 and "WARNING: host memory" not in " ".join(big.output.split())
    unstated = runner.invoke(app, [*args, "cpu=AMD EPYC 7343,channels=8,mt=3200"])
    assert unstated.exit_code == 0 and "WARNING: host memory" not in " ".join(unstated.output.split())


@pytest.mark.parametrize("scheme", ["source", "family", "hardware"])
def test_a_folds_cpu_expert_cells_ignore_the_held_out_groups_rows(scheme, monkeypatch):
    """Every scheme refits the CPU-expert cells inside its folds: multiplying the held-out group's measured decode
    speeds by 4 moves the full fit's cells but neither the fold's cells nor the fold's prediction of its rows."""
    from dataclasses import replace

    from optimizer.fidelity import calibrate, crossval, heldout
    rows = heldout.offload_rows()
    g = crossval._row_group(scheme)

    def group_of(r):
        srows, why = heldout.speed_rows_of(r)
        return {g(s) for s in srows if not why and s["metric"] == "decode_tok_s"}
    # the group with the most CPU-expert fit rows (the strongest pull on the full fit)
    counts: dict[str, int] = {}
    for r in rows:
        for grp in group_of(r):
            counts[grp] = counts.get(grp, 0) + 1
    assert set(counts) <= crossval.cpu_expert_groups(scheme)
    grp = max(sorted(counts), key=counts.__getitem__)
    perturbed = []
    for r in rows:
        if grp in group_of(r):
            m = dict(r["measured"])
            m["decode_tok_s_per_seq"] = 4 * float(m["decode_tok_s_per_seq"])
            r = {**r, "measured": m}
        perturbed.append(r)
    item = next(it for it in crossval.items() if it.metric == "decode_tok_s" and it.offload and it.group(scheme) == grp)
    full = replace(calibrate.fit_all(), cpu_experts=calibrate.cpu_expert_cells(calibrate.fit_cpu_experts()))
    before_cells = crossval.fold_cpu_cells(scheme, grp)
    before = crossval._predict_all([item], replace(full, cpu_experts=before_cells))[item.id]
    full_before = calibrate.fit_cpu_experts()
    monkeypatch.setattr(heldout, "offload_rows", lambda: [dict(r) for r in perturbed])
    assert calibrate.fit_cpu_experts() != full_before  # the perturbation reaches the full fit
    after_cells = crossval.fold_cpu_cells(scheme, grp)
    assert after_cells == before_cells
    assert crossval._predict_all([item], replace(full, cpu_experts=after_cells))[item.id] == before


def test_sglang_plans_compute_prefill_experts_on_the_cpu_as_the_pinned_release_does():
    """`estimate` of an SGLang + KTransformers plan (what `export` launches: SGLang 0.5.23 without a layerwise
    prefill flag) computes the offloaded experts of every prefill chunk on the CPU; the published KTransformers runs
    (their own builds, threshold set) stream large chunks to the GPUs."""
    from dataclasses import replace as dc_replace

    from optimizer.estimate.deployment import EngineSettings, evaluate
    from optimizer.fidelity.heldout import offload_rows, speed_rows_of
    from optimizer.fidelity.predict import deployment_of
    row = next(s for r in offload_rows() for s in speed_rows_of(r)[0]
               if s["engine"] == "sglang" and s["metric"] == "prefill_tok_s" and s["prompt_tokens"] > 4096)
    d = deployment_of(row)
    assert d.settings.kt_gpu_prefill_token_threshold == C.KT_GPU_PREFILL_TOKEN_THRESHOLD
    measured_build = evaluate(d).prefill
    pinned = evaluate(dc_replace(d, settings=EngineSettings())).prefill
    assert measured_build.expert_path == "stream" and pinned.expert_path == "cpu"
    # the CPU path overlaps the GPU's work (KTransformers): TTFT is at least the CPU experts' time, never their sum
    assert pinned.ttft_s >= pinned.expert_cpu_s > 0

