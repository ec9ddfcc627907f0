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


def plot_pareto(r: CheapestResult, path: Path, title: str) -> Path:
    plt = _plt()
    plans = [r.plan, *r.alternatives] if r.plan else []
    pts = [(p.speed.tok_s_per_seq, p.costs.objective_value) for p in plans]
    fig, ax = plt.subplots(figsize=(8.5, 4.8), dpi=100)
    try:
        if pts:
            ax.scatter([x for x, _ in pts[1:]], [y for _, y in pts[1:]], color="tab:blue", label="alternatives",
                       zorder=3)
            ax.scatter([pts[0][0]], [pts[0][1]], color="tab:red", marker="*", s=180, label="chosen plan", zorder=4)
            front = pareto(pts)
            ax.step([x for x, _ in front], [y for _, y in front], where="post", color="tab:gray", linestyle="--",
                    label="Pareto front (labelled)")
            on_front = set(front)
            for p, (x, y) in zip(plans, pts):  # label the front only: dominated plans would clutter it
                if (x, y) in on_front:
                    ax.annotate(_label(p), (x, y), textcoords="offset points", xytext=(6, 4), fontsize=7)
                    on_front.discard((x, y))
        if r.query.tok_s:
            ax.axvline(r.query.tok_s, color="tab:green", linestyle=":", label=f"target {r.query.tok_s:g} tok/s")
        if r.query.max_budget:
            ax.axhline(r.query.max_budget, color="tab:orange", linestyle=":",
                       label=f"budget {money(r.objective, r.query.max_budget)}")
        unit = {"capex": "USD", "hourly": "USD/h", "power": "W"}[r.objective]
        ax.set_xlabel("decode tok/s per sequence (expected)")
        ax.set_ylabel(f"{r.objective} ({unit})")
        ax.set_title(title if pts else f"{title}: no plan ({r.status})", fontsize=10)
        ax.grid(True, alpha=0.3)
        ax.margins(x=0.25, y=0.15)
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
    labels = [f"dev {i}" for i in range(n)] if n <= MAX_BARS else [f"each of {n} devices"]
    parts = {"weights": m.weights_bytes, "KV cache": m.kv_bytes, "runtime": m.runtime_bytes}
    free = max(m.capacity_bytes - sum(parts.values()), 0.0)
    colors = {"weights": "tab:blue", "KV cache": "tab:orange", "runtime": "tab:purple", "free": "lightgray"}
    bars = list(labels)
    host = m.host_used_bytes > 0
    if host:
        bars.append("host DRAM (per node)")
    fig, ax = plt.subplots(figsize=(max(6.5, 0.6 * len(bars) + 4.5), 4.5), dpi=100)
    try:
        bottom = [0.0] * len(bars)
        for name, v in [*parts.items(), ("free", free)]:
            vals = [v / GiB] * len(labels) + ([0.0] if host else [])
            ax.bar(bars, vals, bottom=bottom, color=colors[name], label=name)
            bottom = [b + x for b, x in zip(bottom, vals)]
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
        if len(bars) > 8:
            ax.tick_params(axis="x", labelrotation=60, labelsize=7)
        fig.tight_layout()
        fig.savefig(path, format="png")
    finally:
        plt.close(fig)
    return path


def plot_question(r: CheapestResult, folder: Path, name: str, title: str) -> list[Path]:
    out = [plot_pareto(r, folder / f"{name}.pareto.png", title)]
    if r.plan is not None:
        out.append(plot_memory(r.plan, folder / f"{name}.memory.png", title))
    return out
