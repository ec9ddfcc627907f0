"""PNG plots for one solved question (matplotlib, Agg backend; imported only when --plot is given)."""

from __future__ import annotations

from pathlib import Path

from optimizer.scenarios.report import money
from optimizer.solver.plan import Plan
from optimizer.solver.search import CheapestResult
from optimizer.units import GiB

MAX_BARS = 16  # more devices than this are drawn as one bar labelled "each of N" (they are identical)


def _plt():
    import matplotlib
    matplotlib.use("Agg", force=True)
    import matplotlib.pyplot as plt
    return plt


def pareto(points: list[tuple[float, float]]) -> list[tuple[float, float]]:
    """(tok/s, cost) points not beaten by a cheaper-or-equal, at-least-as-fast one; sorted by cost."""
    front: list[tuple[float, float]] = []
    for tok, cost in sorted(points, key=lambda p: (p[1], -p[0])):
        if not front or tok > front[-1][0]:
            front.append((tok, cost))
    return front


def _label(p: Plan) -> str:
    return f"{p.hardware.n_nodes}× {p.hardware.node}\n{p.engine} {p.quant}"


TIER_MARKERS = {"1.5-bit": "v", "2-bit": "s", "3-bit": "D", "4-bit": "o", "5-6-bit": "P", "8-bit": "X",
                "16-bit": "^"}


def _short(p: Plan) -> str:
    return f"{p.hardware.n_nodes}× {p.hardware.node}, {p.engine} {p.quant}"


def _speed(p: Plan) -> float:
    return 1.0 / p.serving.tpot_s if p.serving is not None else p.speed.tok_s_per_seq


def plot_pareto(r: CheapestResult, path: Path, title: str) -> Path:
    """The cost-quality frontier: one marker per quality tier (its cheapest plan, labelled with its hardware),
    the headline starred, the next-cheapest alternatives as small dots, the tok/s target and budget as lines."""
    plt = _plt()
    fig, ax = plt.subplots(figsize=(9.5, 5.2), dpi=100)
    try:
        entries = list(r.frontier)
        if not entries and r.plan is not None:
            entries = []
        alts = [p for p in r.alternatives if all(p.candidate_id != f.plan.candidate_id for f in entries)]
        if alts:
            ax.scatter([_speed(p) for p in alts], [p.costs.objective_value for p in alts], s=14, color="tab:gray",
                       alpha=0.6, label="next-cheapest alternatives (headline tier)", zorder=2)
        cmap = plt.get_cmap("viridis")
        for k, f in enumerate(entries):
            x, y = _speed(f.plan), f.plan.costs.objective_value
            color = cmap(k / max(1, len(entries) - 1))
            ax.scatter([x], [y], marker=TIER_MARKERS.get(f.tier, "o"), s=90, color=color, edgecolor="black",
                       label=f"{f.tier} ({f.expert_bits:.2f} bits)", zorder=3)
            if f.headline:
                ax.scatter([x], [y], marker="*", s=420, facecolor="none", edgecolor="tab:red", linewidth=1.6,
                           label="headline plan", zorder=4)
            # alternate label sides so neighbouring tiers do not overprint each other
            ax.annotate(_short(f.plan), (x, y), textcoords="offset points", xytext=(8, 10 if k % 2 else -14),
                        fontsize=7, zorder=5)
        if r.plan is not None and not entries:
            ax.scatter([_speed(r.plan)], [r.plan.costs.objective_value], marker="*", s=200, color="tab:red",
                       label="headline plan", zorder=4)
        if r.query.tok_s:
            ax.axvline(r.query.tok_s, color="tab:green", linestyle=":", label=f"target {r.query.tok_s:g} tok/s")
        if r.query.max_budget:
            ax.axhline(r.query.max_budget, color="tab:orange", linestyle=":",
                       label=f"budget {money(r.objective, r.query.max_budget)}")
        costs = [f.plan.costs.objective_value for f in entries] + [p.costs.objective_value for p in alts]
        if costs and min(costs) > 0 and max(costs) / min(costs) > 20:
            ax.set_yscale("log")
        unit = {"capex": "USD", "hourly": "USD/h", "power": "W"}[r.objective]
        ax.set_xlabel("decode tok/s per sequence (expected)")
        ax.set_ylabel(f"{r.objective} ({unit})")
        ax.set_title((title if (entries or r.plan) else f"{title}: no plan ({r.status})")
                     + "\ncheapest plan per quality tier (experts/FFN bits per weight)", fontsize=10)
        ax.grid(True, alpha=0.3)
        ax.margins(x=0.3, y=0.2)
        ax.legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.01, 1.0))
        fig.tight_layout()
        fig.savefig(path, format="png")
    finally:
        plt.close(fig)
    return path


def plot_layers(p: Plan, path: Path, title: str, n_layers: int) -> Path:
    """Where each MoE layer's routed experts live in an offload plan: GPU, host DRAM or NVMe."""
    plt = _plt()
    dram, nvme = set(p.offload.offloaded_layers), set(p.offload.nvme_layers)
    tiers = ["GPU" if i not in dram and i not in nvme else ("host DRAM" if i in dram else "NVMe")
             for i in range(n_layers)]
    colors = {"GPU": "tab:blue", "host DRAM": "tab:brown", "NVMe": "tab:red"}
    fig, ax = plt.subplots(figsize=(max(7.0, 0.14 * n_layers + 3), 2.6), dpi=100)
    try:
        for name in colors:
            xs = [i for i, t in enumerate(tiers) if t == name]
            if xs:
                ax.bar(xs, [1] * len(xs), width=0.9, color=colors[name], label=f"{name} ({len(xs)} layers)")
        ax.set_yticks([])
        ax.set_xlabel("layer")
        ax.set_xlim(-1, n_layers)
        ax.set_title(f"{title}\nrouted experts per layer: {_short(p)}", fontsize=9)
        ax.legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.01, 1.0))
        fig.tight_layout()
        fig.savefig(path, format="png")
    finally:
        plt.close(fig)
    return path


def plot_memory(p: Plan, path: Path, title: str) -> Path:
    """Stacked bar per device of the chosen plan: weights, KV, runtime, free (GiB), budget line; host DRAM too."""
    plt = _plt()
    m = p.memory
    n = p.hardware.n_nodes * p.hardware.gpus_per_node
    labels = [f"GPU {i}" for i in range(n)] if n <= MAX_BARS else [f"each of {n} GPUs"]
    parts = {"weights": m.weights_bytes, "KV cache": m.kv_bytes, "runtime": m.runtime_bytes}
    free = max(m.capacity_bytes - sum(parts.values()), 0.0)
    colors = {"weights": "tab:blue", "KV cache": "tab:orange", "runtime": "tab:purple", "free": "lightgray"}
    bars = list(labels)
    host = m.host_used_bytes > 0
    if host:
        bars.append("host DRAM\n(per node)")
    fig, ax = plt.subplots(figsize=(max(6.5, 0.6 * len(bars) + 4.5), 4.5), dpi=100)
    try:
        bottom = [0.0] * len(bars)
        for name, v in [*parts.items(), ("free", free)]:
            vals = [v / GiB] * len(labels) + ([0.0] if host else [])
            ax.bar(bars, vals, bottom=bottom, color=colors[name], label=name)
            bottom = [b + x for b, x in zip(bottom, vals, strict=True)]
        if host:
            used, cap = m.host_used_bytes / GiB, m.host_capacity_bytes / GiB
            ax.bar(bars[-1:], [used], color="tab:brown", label="host: offloaded experts + runtime")
            ax.bar(bars[-1:], [max(cap - used, 0)], bottom=[used], color="lightgray")
        ax.hlines(m.budget_bytes / GiB, -0.45, len(labels) - 0.55, color="black", linestyle="--", linewidth=1,
                  label=f"{p.engine} budget {m.budget_bytes / GiB:,.1f} GiB", zorder=3)
        ax.set_ylabel("GiB")
        ax.set_title(f"{title}\n{_label(p).replace(chr(10), ', ')}; headroom {m.headroom_bytes / GiB:,.1f} GiB",
                     fontsize=9)
        ax.legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.01, 1.0))
        if len(bars) > 4:  # long rows of bars: turn the labels so neighbours never touch
            ax.tick_params(axis="x", labelrotation=45, labelsize=7)
            for t in ax.get_xticklabels():
                t.set_horizontalalignment("right")
        fig.tight_layout()
        fig.savefig(path, format="png")
    finally:
        plt.close(fig)
    return path


def plot_question(r: CheapestResult, folder: Path, name: str, title: str) -> list[Path]:
    out = [plot_pareto(r, folder / f"{name}.pareto.png", title)]
    if r.plan is not None:
        out.append(plot_memory(r.plan, folder / f"{name}.memory.png", title))
        if r.plan.offload.offloaded_layers or r.plan.offload.nvme_layers:
            from optimizer.catalog.models import resolve_model
            n = len(resolve_model(r.plan.model).spec.main_layers)
            out.append(plot_layers(r.plan, folder / f"{name}.layers.png", title, n))
    return out


def plot_sweep(rows: list, path: Path, title: str) -> Path:
    """A sweep's heat map: rows = the swept fields but the last, columns = the last; colour = the cheapest cost
    (log scale), annotated with cost and hardware; grey = no plan."""
    import math

    import numpy as np

    from optimizer.scenarios.report import cell
    plt = _plt()
    fields = list(rows[0].sweep)
    col_f, row_fs = fields[-1], fields[:-1]
    cols = list(dict.fromkeys(r.sweep[col_f] for r in rows))
    keys = list(dict.fromkeys(tuple(r.sweep[f] for f in row_fs) for r in rows))
    grid = np.full((len(keys), len(cols)), np.nan)
    text = [["" for _ in cols] for _ in keys]
    for r in rows:
        i, j = keys.index(tuple(r.sweep[f] for f in row_fs)), cols.index(r.sweep[col_f])
        if r.solved and r.cost:
            grid[i, j] = math.log10(r.cost)
        text[i][j] = cell(r).replace(" ", "\n", 1)
    fig, ax = plt.subplots(figsize=(1.6 + 1.7 * len(cols), 1.0 + 0.6 * len(keys)))
    cmap = plt.get_cmap("viridis").with_extremes(bad="#dddddd")
    ax.imshow(np.ma.masked_invalid(grid), cmap=cmap, aspect="auto")
    ax.set_xticks(range(len(cols)), [f"{col_f}={c}" for c in cols], fontsize=8)
    ax.set_yticks(range(len(keys)), [" / ".join(k) or "-" for k in keys], fontsize=8)
    for i in range(len(keys)):
        for j in range(len(cols)):
            ax.text(j, i, text[i][j], ha="center", va="center", fontsize=6, color="white" if
                    not np.isnan(grid[i, j]) else "black")
    ax.set_title(f"{title}: cheapest cost per cell (colour: log cost)", fontsize=9)
    ax.set_ylabel(" / ".join(row_fs) or "-", fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path
