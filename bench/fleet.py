"""Serving fleets: rigopt's cheapest fleet for SLA questions, beside AIConfigurator 0.12 when it is installed.

    python bench/fleet.py [--aic PATH_TO_aiconfigurator] [--skip-aic] [--aic-record F | --aic-recorded F] [--fresh]
    python bench/fleet.py --fresh-only     # only section 5 (AIConfigurator and rigopt as fresh processes)

AIConfigurator is not a dependency of rigopt: install it in its own venv, e.g.
    python3 -m venv /tmp/aic-venv && /tmp/aic-venv/bin/pip install aiconfigurator==0.12.0
and the bench finds /tmp/aic-venv/bin/aiconfigurator (or pass --aic, or put it on PATH).

1. Five SLA questions on NVIDIA datacenter systems. AIConfigurator (`aiconfigurator cli default`, 8 GPUs of one
   system) says how many requests/s its best configuration carries within the SLA; rigopt is then asked for the
   cheapest fleet (capex objective, partly filled servers allowed, that system only) serving that rate, and again
   over the whole catalogue. Printed: GPUs, layout, TTFT, TPOT, output tok/s/GPU, $/M tokens, wall times and the
   ratio. Without AIConfigurator a fixed rate per question is used and its columns say why they are empty.
2. A fleet for 10,000+ GPUs: DeepSeek-V4-Pro, 1M-token context (1,000,000 in / 4,000 out), 200 req/s, TTFT p90
   60 s, TPOT 100 ms, on H200 and B200, both objectives (target: under 10 s).
3. DeepSeek-V4-Flash FP8 on H200 with SGLang, 8K in / 1K out, concurrency 8: four GPUs where memory allows it.
4. The first question as a fresh `rigopt cheapest` process (SLA form), wall time.
5. (`--fresh`, needs a live AIConfigurator) the section-1 questions side by side as users run them: for each
   question, in one run and interleaved (the order alternates per question), AIConfigurator's `cli default` and
   `rigopt fleet` (that system, and the whole catalogue) each as a fresh process, as typed; wall and CPU time
   (user + system of the child) of each, and the ratios of whole processes.

--aic-record F appends each live AIConfigurator result (dated) to F; --aic-recorded F reuses such a file instead of
running AIConfigurator, and the table says so with the recording dates.
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import re
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from optimizer.fleet import FleetQuery, solve_fleet  # noqa: E402

QUESTIONS = [
    # name, model key, AIC system, rigopt accelerator, engine, isl, osl, TTFT s, TPOT s, rate without AIC
    ("qwen3-32b chat", "qwen3-32b", "h200_sxm", "h200-sxm", "vllm", 4000, 500, 2.0, 0.050, 10.0),
    ("llama-3.1-70b", "llama-3.1-70b", "h100_sxm", "h100-sxm", "vllm", 2048, 512, 1.0, 0.040, 5.0),
    ("qwen3-235b-a22b", "qwen3-235b-a22b", "h200_sxm", "h200-sxm", "sglang", 4096, 1024, 2.0, 0.050, 5.0),
    ("deepseek-v3 8K/1K", "deepseek-v3", "h200_sxm", "h200-sxm", "sglang", 8192, 1024, 3.0, 0.060, 3.0),
    ("gpt-oss-120b", "gpt-oss-120b", "b200_sxm", "b200", "vllm", 8192, 1024, 2.0, 0.030, 10.0),
]


def find_aic(explicit: str | None) -> str | None:
    for c in (explicit, shutil.which("aiconfigurator"), "/tmp/aic-venv/bin/aiconfigurator"):
        if c and os.path.isfile(c) and os.access(c, os.X_OK):
            return c
    return None


def run_aic(aic: str, model: str, system: str, engine: str, isl: int, osl: int, ttft: float, tpot: float) -> dict:
    with tempfile.TemporaryDirectory() as d:
        cmd = [
            aic,
            "cli",
            "default",
            "--model-path",
            str(ROOT / "models" / model),
            "--system",
            system,
            "--total-gpus",
            "8",
            "--backend",
            engine,
            "--isl",
            str(isl),
            "--osl",
            str(osl),
            "--ttft",
            str(ttft * 1000),
            "--tpot",
            str(tpot * 1000),
            "--save-dir",
            d,
            "--no-color",
        ]
        t = time.perf_counter()
        p = subprocess.run(cmd, capture_output=True, text=True, timeout=900)
        wall = time.perf_counter() - t
    text = p.stdout + p.stderr
    out: dict = {"wall_s": wall, "ok": False}

    def num(label: str) -> float | None:
        m = re.search(rf"{label}:\s*([\d,.]+)", text)
        return float(m.group(1).replace(",", "")) if m else None

    out.update(per_gpu=num("Per-GPU Throughput"), rate=num("Request Rate"), ttft_ms=num("TTFT"), tpot_ms=num("TPOT"))
    best = re.search(r"Best Experiment Chosen:\s*(\w+)", text)
    out["mode"] = best.group(1) if best else None
    # first row of the chosen experiment's top table: GPUs used and parallel layout
    if out["mode"]:
        sect = text.split(f"{out['mode']} Top Configurations", 1)
        if len(sect) == 2:
            for line in sect[1].splitlines():
                cells = [c.strip() for c in line.split("|")]
                if len(cells) > 3 and cells[1] == "1":
                    out["row"] = cells
                    break
    if out["rate"] is None:
        tail = [l for l in text.splitlines() if "rror" in l or "failed" in l.lower()][-1:]
        out["error"] = tail[0][:160] if tail else f"exit {p.returncode}, no result parsed"
    else:
        out["ok"] = True
    return out


def aic_layout(a: dict) -> str:
    row = a.get("row")
    if not row:
        return "?"
    # agg columns: | Rank | backend | tok/s/gpu | tok/s/user | req/s | TTFT | lat | conc | gpus | replicas |
    #               gpus/rep | gpus/worker | parallel | bs |
    if a["mode"] == "agg":
        return f"{row[10]}x {row[13]}"
    # disagg: ... | (p)workers | (p)gpus/worker | (p)parallel | (p)bs | (d)workers | (d)gpus/worker |
    #         (d)parallel | (d)bs |
    return f"{row[10]}x [{row[12]}P {row[14]} + {row[16]}D {row[18]}]"


def fleet_summary(f) -> str:
    parts = []
    for p in f.pools:
        parts.append(f"{p.replicas}x{p.role[0].upper()} {p.gpus_per_replica}x{p.accelerator} {p.engine} {p.layout}")
    return " + ".join(parts)


def usd_per_m(res) -> str:
    m = res.money
    return f"${m.usd_per_m_blended:.4f}" if m and m.usd_per_m_blended is not None else "n/a"


def load_recorded(path: str) -> dict[str, dict]:
    """AIConfigurator results recorded by an earlier `--aic-record` run (one JSON object per question)."""
    out = {}
    for line in Path(path).read_text().splitlines():
        if line.strip():
            d = json.loads(line)
            out[d["name"]] = d
    return out


def section_questions(aic: str | None, recorded: dict[str, dict] | None, record: str | None) -> None:
    print("## 1. SLA questions (AIConfigurator: 8 GPUs of one system; rigopt: that rate, cheapest fleet)\n")
    if recorded is not None:
        dates = sorted({d.get("date", "?")[:16] for d in recorded.values()})
        print(
            f"AIConfigurator columns RECORDED by an earlier run of this bench ({', '.join(dates)} UTC), not run "
            "now: its wall times are from that run's machine load, the rigopt times from this one.\n"
        )
    elif aic is None:
        print(
            "AIConfigurator not found (pip install aiconfigurator==0.12.0 in its own venv, or --aic PATH): "
            "its columns are empty and each question uses a fixed rate.\n"
        )
    t = time.perf_counter()
    from optimizer.catalog.hardware import load_hardware

    load_hardware()
    print(
        f"rigopt's catalogue loaded in {time.perf_counter() - t:.2f} s (once per process, before the table; the "
        "first question also builds the topology graphs of every node type).\n"
    )
    ratios: list[tuple[str, float, float]] = []
    hdr = (
        "question",
        "rate req/s",
        "rigopt GPUs",
        "rigopt fleet",
        "TTFT s",
        "TPOT ms",
        "out tok/s/GPU",
        "$/M (capex amort.)",
        "rigopt s",
        "catalogue s",
        "AIC GPUs",
        "AIC layout",
        "AIC TTFT s",
        "AIC TPOT ms",
        "AIC tok/s/GPU",
        "AIC s",
        "AIC/rigopt",
    )
    print("| " + " | ".join(hdr) + " |")
    print("|" + "---|" * len(hdr))
    for name, model, system, gpu, engine, isl, osl, ttft, tpot, rate0 in QUESTIONS:
        if recorded is not None:
            a = recorded.get(name, {"ok": False, "error": "not recorded"})
        elif aic:
            a = run_aic(aic, model, system, engine, isl, osl, ttft, tpot)
            if record:
                with open(record, "a") as fh:
                    fh.write(json.dumps({**a, "name": name, "date": datetime.datetime.now(datetime.UTC).isoformat(),
                                         "aiconfigurator": "0.12.0"}) + "\n")
        else:
            a = {"ok": False, "error": "not installed"}
        rate = a["rate"] if a.get("ok") else rate0
        t = time.perf_counter()
        r = solve_fleet(
            FleetQuery(
                model,
                isl,
                osl,
                rate,
                ttft,
                tpot,
                objective="capex",
                gpus=(gpu,),
                engines=(engine,),
                compare_other=False,
            )
        )
        t_sys = time.perf_counter() - t
        t = time.perf_counter()
        whole = solve_fleet(FleetQuery(model, isl, osl, rate, ttft, tpot, objective="capex", compare_other=False))
        t_all = time.perf_counter() - t
        f = r.fleet
        if a.get("ok"):
            aic_cols = [
                f"{8 if a.get('row') is None else a['row'][9]}",
                aic_layout(a),
                f"{a['ttft_ms'] / 1000:.3f}",
                f"{a['tpot_ms']:.1f}",
                f"{a['per_gpu']:,.0f}",
                f"{a['wall_s']:.1f}" + (" (rec.)" if recorded is not None else ""),
                f"{a['wall_s'] / t_sys:.0f}x (catalogue {a['wall_s'] / t_all:.0f}x)",
            ]
            ratios.append((name, a["wall_s"] / t_sys, a["wall_s"] / t_all))
        else:
            aic_cols = [a.get("error", "")[:60], "", "", "", "", f"{a.get('wall_s', 0):.1f}" if aic else "", ""]
        if f is None:
            cols = [
                name,
                f"{rate:.3g}",
                "none",
                "; ".join(r.notes)[:60],
                "",
                "",
                "",
                "",
                f"{t_sys:.2f}",
                f"{t_all:.2f}",
            ]
        else:
            cols = [
                name,
                f"{rate:.3g}",
                str(f.gpus),
                fleet_summary(f),
                f"{f.ttft_s:.3f}",
                f"{f.tpot_s * 1000:.1f}",
                f"{f.output_tok_s_per_gpu:,.0f}",
                usd_per_m(r),
                f"{t_sys:.2f}",
                f"{t_all:.2f}",
            ]
        if whole.fleet is not None:
            cols[3] += f" (catalogue: {whole.fleet.gpus}x, {fleet_summary(whole.fleet)}, ${whole.fleet.capex_usd:,.0f})"
        print("| " + " | ".join(cols + aic_cols) + " |", flush=True)
    print()
    if ratios:
        whole = [r[2] for r in ratios]
        print(
            f"AIConfigurator wall time / rigopt's: whole catalogue {span(whole, '.0f')}; the >= 50x target met "
            f"for {sum(1 for x in whole if x >= 50)} of {len(whole)} questions; one system "
            f"{span([r[1] for r in ratios], '.0f')}.\n"
        )


def span(ratios: list[float], f: str) -> str:
    """'4.6x to 21.2x (median 5.3x)' of a list of ratios."""
    xs = sorted(ratios)
    return f"{xs[0]:{f}}x to {xs[-1]:{f}}x (median {xs[len(xs) // 2]:{f}}x)"


def section_large() -> None:
    print("## 2. A fleet of 10,000+ GPUs\n")
    t = time.perf_counter()
    r = solve_fleet(
        FleetQuery(
            "deepseek-v4-pro", 1_000_000, 4000, 200.0, 60.0, 0.100, objective="hourly", gpus=("h200-sxm", "b200")
        )
    )
    wall = time.perf_counter() - t
    f = r.fleet
    print("DeepSeek-V4-Pro, 1,000,000 in / 4,000 out, 200 req/s, TTFT p90 <= 60 s, TPOT <= 100 ms, H200 + B200:")
    for x in (f, r.other):
        print(
            f"  {x.objective}: {x.gpus:,} GPUs, {x.kind}: {fleet_summary(x)}; "
            + (f"${x.usd_per_hour:,.0f}/h" if x.usd_per_hour else f"${x.capex_usd:,.0f} capex")
            + f", TTFT p90 {x.ttft_s:.1f} s, TPOT {x.tpot_s * 1000:.1f} ms ({x.status})"
        )
    m = r.money
    print(
        f"  $/M tokens {m.usd_per_m_in:.3f} in / {m.usd_per_m_out:.3f} out; own beats rent above "
        f"{m.own_beats_rent_above_tokens_per_month / 1e12:,.1f}T tokens/month (capacity "
        f"{m.monthly_capacity_tokens / 1e12:,.1f}T)"
    )
    print(
        f"  {r.candidates} replica candidates, {r.rows} rows, both objectives solved in {wall:.1f} s "
        f"({'under' if wall < 10 else 'OVER'} the 10 s target)\n"
    )


def section_four_gpu() -> None:
    from optimizer.catalog.models import resolve_model
    from optimizer.estimate.serving import Workload
    from optimizer.fleet.capacity import SLA, Config, Replica
    from optimizer.layout import Parallel

    print("## 3. DeepSeek-V4-Flash FP8 on H200, SGLang, 8K in / 1K out, concurrency 8\n")
    m = resolve_model("deepseek-v4-flash")
    for g in (2, 4, 8):
        rep = Replica(
            m, Config("hgx-h200-8", "h200-sxm", g, 1, "sglang", "fp8", None, Parallel(tp=g)), SLA(8192, 1024, 10.0, 1.0)
        )
        d = rep.deployment(Workload(8192, 1024, concurrency=8))
        from optimizer.estimate.deployment import evaluate

        ev = evaluate(d)
        mem = ev.memory
        line = (
            f"  {g}x H200 TP{g}: {mem.used_bytes / 1e9:,.1f} of {mem.budget_bytes / 1e9:,.1f} GB per GPU "
            f"({'fits' if mem.fits else 'does not fit'})"
        )
        if mem.fits and ev.serving is not None:
            s = ev.serving
            line += (
                f"; TPOT {s.tpot_s * 1000:.1f} ms, TTFT {s.ttft_s:.2f} s, {s.request_rate_rps:.2f} req/s, "
                f"{s.output_tok_s_per_gpu:,.0f} output tok/s/GPU"
            )
        print(line)
    r = solve_fleet(
        FleetQuery(
            "deepseek-v4-flash",
            8192,
            1024,
            1.0,
            2.0,
            0.05,
            objective="capex",
            gpus=("h200-sxm",),
            engines=("sglang",),
            quants=("fp8",),
            compare_other=False,
        )
    )
    f = r.fleet
    from optimizer.fleet.offers import buy_offers

    full = next(o for o in buy_offers({"h200-sxm"}) if o.full_node)
    print(
        f"  fleet for 1 req/s (TTFT p90 <= 2 s, TPOT <= 50 ms): {f.gpus} GPUs, {fleet_summary(f)}, "
        f"{f.pools[0].offer}, ${f.capex_usd:,.0f} (the whole 8-GPU server: ${full.capex_usd:,.0f})\n"
    )


def section_cli() -> None:
    """The first question as a user runs it: `rigopt cheapest` in the SLA form, a fresh process (interpreter,
    imports, catalogue, topology graphs and the whole-catalogue search)."""
    name, model, _, _, _, isl, osl, ttft, tpot, rate = QUESTIONS[0]
    cmd = [sys.executable, "-m", "optimizer", "cheapest", model, "--isl", str(isl), "--osl", str(osl),
           "--rate", str(rate), "--ttft", str(ttft), "--tpot", str(tpot), "--json"]
    t = time.perf_counter()
    p = subprocess.run(cmd, capture_output=True, text=True, timeout=600, cwd=ROOT)
    wall = time.perf_counter() - t
    gpus = json.loads(p.stdout)["fleet"]["gpus"] if p.returncode == 0 else f"exit {p.returncode}"
    print("## 4. One question as a fresh process\n")
    print(f"  {' '.join(cmd[1:])}: {wall:.2f} s wall ({gpus} GPUs)\n")


def children_cpu_s() -> float:
    """CPU time (user + system) of this process's finished children so far."""
    r = resource.getrusage(resource.RUSAGE_CHILDREN)
    return r.ru_utime + r.ru_stime


def timed(cmd: list[str]) -> tuple[float, float, subprocess.CompletedProcess[str]]:
    """Run `cmd` as a fresh child process; its wall time and CPU time (user + system of the child)."""
    c0, t = children_cpu_s(), time.perf_counter()
    p = subprocess.run(cmd, capture_output=True, text=True, timeout=900, cwd=ROOT)
    return time.perf_counter() - t, children_cpu_s() - c0, p


def section_fresh(aic: str | None) -> None:
    """Both tools as users run them: whole fresh processes, interleaved in one run."""
    print("## 5. Side by side as fresh processes (AIConfigurator and rigopt interleaved, one run)\n")
    if aic is None:
        print("  needs a live AIConfigurator (not --aic-recorded / --skip-aic): skipped\n")
        return
    print(
        "Each cell is one whole process as typed (interpreter, imports, catalogue, search, output); wall s / CPU s. "
        "The rate given to rigopt is the one AIConfigurator's best 8-GPU configuration carries.\n"
    )
    hdr = ("question", "AIC wall / CPU s", "rigopt that system wall / CPU s", "rigopt catalogue wall / CPU s",
           "AIC / rigopt (system)", "AIC / rigopt (catalogue)", "answers")
    print("| " + " | ".join(hdr) + " |")
    print("|" + "---|" * len(hdr))
    ratios: list[tuple[float, float]] = []
    for i, (name, model, system, gpu, engine, isl, osl, ttft, tpot, rate0) in enumerate(QUESTIONS):
        base = [sys.executable, "-m", "optimizer", "fleet", model, "--isl", str(isl), "--osl", str(osl),
                "--ttft", str(ttft), "--tpot", str(tpot), "--json"]
        # interleave: AIConfigurator first on even questions, rigopt first on odd ones (rigopt then uses the
        # fixed rate of the question, as AIConfigurator's is not known yet; the rate barely moves its time)
        a: dict = {}
        runs: dict[str, tuple[float, float, subprocess.CompletedProcess[str]]] = {}
        for step in ("aic", "rigopt") if i % 2 == 0 else ("rigopt", "aic"):
            if step == "aic":
                c0 = children_cpu_s()
                a = run_aic(aic, model, system, engine, isl, osl, ttft, tpot)
                a["cpu_s"] = children_cpu_s() - c0
            else:
                rate = a["rate"] if a.get("ok") else rate0
                runs["system"] = timed(base + ["--rate", f"{rate:g}", "--gpus", gpu, "--engine", engine])
                runs["catalogue"] = timed(base + ["--rate", f"{rate:g}"])

        def fleet_gpus(p: subprocess.CompletedProcess[str]) -> str:
            if p.returncode != 0:
                return f"exit {p.returncode}"
            f = json.loads(p.stdout).get("fleet")
            return f"{f['gpus']} GPUs" if f else "none"

        sw, sc, sp = runs["system"]
        cw, cc, cp = runs["catalogue"]
        aw, ac = a.get("wall_s", 0.0), a.get("cpu_s", 0.0)
        ans = f"AIC {a.get('row', [None] * 10)[9] or '?'} GPUs" if a.get("ok") else f"AIC: {a.get('error', '')[:40]}"
        ans += f"; rigopt {fleet_gpus(sp)} / {fleet_gpus(cp)}"
        print(
            f"| {name} | {aw:.1f} / {ac:.1f} | {sw:.2f} / {sc:.2f} | {cw:.2f} / {cc:.2f} | "
            f"{aw / sw:.0f}x wall, {ac / sc:.0f}x CPU | {aw / cw:.0f}x wall, {ac / cc:.0f}x CPU | {ans} |",
            flush=True,
        )
        ratios.append((aw / cw, ac / cc))
    print(
        f"\nWhole process against whole process, rigopt over the whole catalogue: "
        f"{span([r[0] for r in ratios], '.1f')} wall, {span([r[1] for r in ratios], '.1f')} CPU.\n"
    )


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--aic", help="path to the aiconfigurator executable")
    ap.add_argument("--skip-aic", action="store_true")
    ap.add_argument("--aic-record", help="append each AIConfigurator result (JSON lines, dated) to this file")
    ap.add_argument("--aic-recorded", help="use AIConfigurator results recorded by an earlier --aic-record run")
    ap.add_argument("--fresh", action="store_true", help="also section 5: both tools as fresh processes")
    ap.add_argument("--fresh-only", action="store_true", help="only section 5")
    a = ap.parse_args()
    aic = None if a.skip_aic or a.aic_recorded else find_aic(a.aic)
    if a.fresh_only:
        section_fresh(aic)
        return
    recorded = load_recorded(a.aic_recorded) if a.aic_recorded else None
    section_questions(aic, recorded, a.aic_record)
    section_large()
    section_four_gpu()
    section_cli()
    if a.fresh:
        section_fresh(aic)


if __name__ == "__main__":
    main()
