"""Package boundaries as a test: every module's imports (module level and inside functions, parsed with `ast`)
go only downward in the declared layer order, the physics never imports ortools, and the layers that must stay
pure do not defer imports into functions to hide a cycle.

Layer order (low -> high); a module may import its own layer and any layer below it:

    base       optimizer (package), units, errors, engines, cache, limits, layout (Parallel, Links)
    arch       optimizer.arch            config / GGUF / safetensors -> ModelSpec; weight formats
    catalog    optimizer.catalog         catalogue schemas and loaders (the data everything above reads); Hugging Face
                                         Hub ids (catalog/hub.py: config/index/headers into the Hub cache)
               optimizer.detect          the local machine (nvidia-smi, rocm-smi, sysfs, /proc) -> catalogue keys
    topology   optimizer.topology, optimizer.topology_links   graph per node type; graph -> Links
    estimate   optimizer.estimate        pure float physics: Deployment -> evaluate() (no solver, no I/O
                                         beyond the catalogue rows a deployment names)
    moe        optimizer.moe, optimizer.place.loads            MoE load statistics and balancing math
    solver     optimizer.solver, optimizer.hetero   candidates, integer tables, CP-SAT, independent checks
    place      optimizer.place           expert placement (uses the plan schema of solver/)
    render     optimizer.export, optimizer.report              launch plans, result objects and tables
    app        optimizer.fidelity, optimizer.scenarios, optimizer.verify   validation against measurements, batch
                                         solving, a plan checked against the running server
               optimizer.front           the front door: one question (Ask -> Question), solve() picks the back end
    cli        optimizer.cli, optimizer.__main__, optimizer.serve (the web page and API: same questions, same answers)
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PKG = ROOT / "optimizer"

LAYERS: list[tuple[str, list[str]]] = [
    ("base", ["optimizer", "optimizer.units", "optimizer.errors", "optimizer.engines", "optimizer.cache",
              "optimizer.limits", "optimizer.layout", "optimizer.disk_cache"]),
    ("arch", ["optimizer.arch"]),
    ("catalog", ["optimizer.catalog", "optimizer.detect"]),
    ("topology", ["optimizer.topology", "optimizer.topology_links"]),
    ("estimate", ["optimizer.estimate"]),
    ("moe", ["optimizer.moe", "optimizer.place.loads"]),
    ("solver", ["optimizer.solver", "optimizer.hetero", "optimizer.fleet"]),
    ("place", ["optimizer.place"]),
    ("render", ["optimizer.export", "optimizer.report"]),
    ("app", ["optimizer.fidelity", "optimizer.scenarios", "optimizer.verify", "optimizer.front"]),
    ("cli", ["optimizer.cli", "optimizer.__main__", "optimizer.serve"]),
]

# Known upward imports in files being rewritten for issue 11 (the physics entry points). The lead removes each
# entry when switching the import to the lower layer named in the comment.
KNOWN_UPWARD: set[tuple[str, str]] = set()

# Layers whose modules must not import optimizer modules inside functions (a deferred import there is how a
# cycle gets hidden). The CLI and the application/render layers defer imports on purpose, for start-up time.
PURE_LAYERS = {"base", "estimate", "topology", "moe", "solver", "place"}
# TODO(issue 11): deferred imports in files being rewritten in parallel; the lead moves them to module level.
KNOWN_DEFERRED: set[str] = set()

# No CP-SAT below the solver: the physics, the catalogue, the topology and the MoE math are solver-agnostic.
NO_ORTOOLS_LAYERS = {"base", "arch", "estimate", "catalog", "topology", "moe"}


def module_name(path: Path) -> str:
    rel = path.relative_to(ROOT).with_suffix("")
    parts = list(rel.parts)
    if parts[-1] == "__init__":
        parts = parts[:-1]
    return ".".join(parts)


MODULES = {module_name(p): p for p in sorted(PKG.rglob("*.py"))}


def layer_of(module: str) -> int:
    """Index of the layer whose longest prefix matches `module`."""
    best, best_len = None, -1
    for i, (_, prefixes) in enumerate(LAYERS):
        for pre in prefixes:
            if (module == pre or module.startswith(pre + ".")) and len(pre) > best_len:
                best, best_len = i, len(pre)
    if best is None:
        raise AssertionError(f"{module} is in no layer: add it to LAYERS in tests/test_layers.py")
    return best


def imports(path: Path, module: str) -> list[tuple[str, int, bool]]:
    """(imported module, line, inside a function) for every import in the file; relative imports resolved."""
    tree = ast.parse(path.read_text(), str(path))
    out: list[tuple[str, int, bool]] = []

    def visit(node: ast.AST, in_function: bool) -> None:
        for child in ast.iter_child_nodes(node):
            inner = in_function or isinstance(child, (ast.FunctionDef, ast.AsyncFunctionDef, ast.Lambda))
            if isinstance(child, ast.Import):
                out.extend((a.name, child.lineno, in_function) for a in child.names)
            elif isinstance(child, ast.ImportFrom):
                base = child.module or ""
                if child.level:
                    pkg = module.split(".") if path.name == "__init__.py" else module.split(".")[:-1]
                    pkg = pkg[: len(pkg) - child.level + 1]
                    base = ".".join(pkg + ([base] if base else []))
                out.append((base, child.lineno, in_function))
                # `from optimizer.place import export` imports the submodule optimizer.place.export
                for a in child.names:
                    if f"{base}.{a.name}" in MODULES:
                        out.append((f"{base}.{a.name}", child.lineno, in_function))
            visit(child, inner)

    visit(tree, False)
    return out


def test_every_module_has_a_layer():
    for m in MODULES:
        layer_of(m)


def test_imports_only_go_downward():
    bad = []
    for m, path in MODULES.items():
        mine = layer_of(m)
        for target, line, _ in imports(path, m):
            if target != "optimizer" and not target.startswith("optimizer."):
                continue
            theirs = layer_of(target)
            if theirs > mine and (m, target) not in KNOWN_UPWARD:
                bad.append(f"{path.relative_to(ROOT)}:{line}: {m} ({LAYERS[mine][0]}) imports {target} "
                           f"({LAYERS[theirs][0]})")
    assert not bad, "imports that go up the layer order:\n" + "\n".join(bad)


def test_known_exceptions_are_still_needed():
    """Each KNOWN_UPWARD entry is a real import today (remove it when the import is switched)."""
    for m, target in KNOWN_UPWARD:
        assert target in {t for t, _, _ in imports(MODULES[m], m)}, f"{m} no longer imports {target}: drop it"


def test_no_ortools_below_the_solver():
    bad = []
    for m, path in MODULES.items():
        if LAYERS[layer_of(m)][0] not in NO_ORTOOLS_LAYERS:
            continue
        bad += [f"{m}:{line} imports {t}" for t, line, _ in imports(path, m) if t.split(".")[0] == "ortools"]
    assert not bad, bad


def test_estimate_never_imports_ortools():
    for m, path in MODULES.items():
        if m.startswith("optimizer.estimate"):
            assert not [t for t, _, _ in imports(path, m) if t.split(".")[0] == "ortools"], m


def test_no_deferred_imports_in_pure_layers():
    bad = []
    for m, path in MODULES.items():
        if LAYERS[layer_of(m)][0] not in PURE_LAYERS or m in KNOWN_DEFERRED:
            continue
        bad += [f"{path.relative_to(ROOT)}:{line}: import of {t} inside a function"
                for t, line, deferred in imports(path, m) if deferred and t.startswith("optimizer")]
    assert not bad, "\n".join(bad)


@pytest.mark.parametrize("source, target, ok", [
    ("optimizer.solver.search", "optimizer.estimate.speed", True),
    ("optimizer.estimate.speed", "optimizer.solver.table", False),
    ("optimizer.moe.imbalance", "optimizer.place.loads", True),
    ("optimizer.moe.imbalance", "optimizer.place.report", False),
])
def test_layer_order_examples(source, target, ok):
    assert (layer_of(target) <= layer_of(source)) is ok
