"""Extract engine CLI flag names (and simple value types) from downloaded engine sources.

This writes the allow-lists in tests/data/engine_flags/. It reads the sources as text/AST and never imports
or vendors engine code. Refresh (network needed once, ~0.5 GB for vLLM):

    pip download --no-deps -d /tmp/eng vllm==VLLM_VERSION sglang==SGLANG_VERSION
    pip download --no-deps --no-binary :all: -d /tmp/eng llama-cpp-python==LLAMA_CPP_PYTHON_VERSION
    python tools/extract_flags.py /tmp/eng tests/data/engine_flags

(versions: optimizer/engines.py). Output lines: `FLAG<TAB>TYPE[<TAB>choice|choice|...]`, TYPE one of
  int, float, str, json, list, flag (takes no value), bool (takes no value; `--no-X` is listed too),
  optstr (optional value).
`choices` are listed only when the source spells them as literals.
"""

from __future__ import annotations

import ast
import re
import sys
import tarfile
import zipfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # a developer tool, not in the wheel: the checkout's
from optimizer.engines import (  # noqa: E402
    ENGINE_VERSIONS,
    IK_LLAMA_COMMIT,
    LLAMA_CPP_PYTHON_VERSION,
    LLAMACPP_COMMIT,
    LMS_VERSION,
    MLX_LM_VERSION,
    OLLAMA_VERSION,
    SGLANG_ROUTER_VERSION,
    SGLANG_VERSION,
    VLLM_PROXY_SOURCE,
    VLLM_VERSION,
)

VERSIONS = ENGINE_VERSIONS
LLAMACPP_PY = LLAMA_CPP_PYTHON_VERSION


# ----------------------------------------------------------------------------------------------- helpers
def _lit(node):
    try:
        return ast.literal_eval(node)
    except Exception:
        return None


def _literal_aliases(trees: list[ast.Module]) -> dict[str, list]:
    """Module-level `Name = Literal[...]` aliases and `NAME = [..literals..]` lists."""
    out: dict[str, list] = {}
    for t in trees:
        for node in t.body:
            tgt, val = None, None
            if isinstance(node, ast.Assign) and len(node.targets) == 1 and isinstance(node.targets[0], ast.Name):
                tgt, val = node.targets[0].id, node.value
            elif isinstance(node, ast.AnnAssign) and isinstance(node.target, ast.Name) and node.value is not None:
                tgt, val = node.target.id, node.value
            if tgt is None:
                continue
            if isinstance(val, ast.Subscript) and ast.unparse(val.value) in ("Literal", "typing.Literal"):
                vals = _lit(val.slice)
                vals = list(vals) if isinstance(vals, tuple) else [vals]
                if all(isinstance(v, (str, int)) for v in vals):
                    out[tgt] = vals
            elif isinstance(val, (ast.List, ast.Tuple)):
                vals = _lit(val)
                if vals and all(isinstance(v, str) for v in vals):
                    out[tgt] = list(vals)
    return out


def _classes(trees: list[ast.Module]) -> dict[str, ast.ClassDef]:
    out: dict[str, ast.ClassDef] = {}
    for t in trees:
        for node in ast.walk(t):
            if isinstance(node, ast.ClassDef):
                out.setdefault(node.name, node)
    return out


def _fields(cls: ast.ClassDef, classes: dict[str, ast.ClassDef]) -> dict[str, ast.expr]:
    """Annotated fields of a class, including base classes defined in the same sources."""
    out: dict[str, ast.expr] = {}
    for b in cls.bases:
        name = ast.unparse(b)
        if name in classes and classes[name] is not cls:
            out.update(_fields(classes[name], classes))
    for node in cls.body:
        if isinstance(node, ast.AnnAssign) and isinstance(node.target, ast.Name) and not node.target.id.startswith("_"):
            out[node.target.id] = node.annotation
    return out


def _literal_values(ann: ast.expr, aliases: dict[str, list]) -> list | None:
    vals: list = []
    for n in ast.walk(ann):
        if isinstance(n, ast.Subscript) and ast.unparse(n.value) in ("Literal", "typing.Literal"):
            v = _lit(n.slice)
            vals += list(v) if isinstance(v, tuple) else [v]
        elif isinstance(n, ast.Name) and n.id in aliases:
            vals += aliases[n.id]
    vals = [v for v in vals if isinstance(v, (str, int))]
    return vals or None


def _write(path: Path, header: list[str], rows: dict[str, tuple[str, list | None]]) -> None:
    lines = [f"# {h}" if h else "#" for h in header]
    for flag in sorted(rows):
        typ, choices = rows[flag]
        line = f"{flag}\t{typ}"
        if choices:
            line += "\t" + "|".join(str(c) for c in choices)
        lines.append(line)
    path.write_text("\n".join(lines) + "\n")


def _add(rows, flags, typ, choices=None):
    for f in flags:
        rows[f] = (typ, choices)
        if typ == "bool" and f.startswith("--"):
            rows["--no-" + f[2:]] = ("flag", None)


# ----------------------------------------------------------------------------------------------- vLLM
def _vllm_type(ann: ast.expr, config_classes: set[str], aliases: dict[str, list]) -> tuple[str, list | None]:
    text = ast.unparse(ann)
    names = {n.id for n in ast.walk(ann) if isinstance(n, ast.Name)} | \
            {n.attr for n in ast.walk(ann) if isinstance(n, ast.Attribute)}
    if names & config_classes:
        return "json", None
    toks = set(re.findall(r"[A-Za-z_]+", text))
    if {"bool", "str", "None"} == toks or ({"bool", "str"} <= toks and len(toks - {"None"}) == 2):
        return "optstr", None
    if "bool" in toks:
        return "bool", None
    lits = _literal_values(ann, aliases)
    if lits:
        return "str", lits
    for coll in ("list", "tuple", "set"):
        if coll in toks:
            return "list", None
    if "int" in toks:
        return "int", None
    if "float" in toks:
        return "float", None
    if "dict" in toks:
        return "json", None
    return "str", None


def extract_vllm(wheel: Path) -> dict[str, tuple[str, list | None]]:
    with zipfile.ZipFile(wheel) as z:
        src = {n: z.read(n).decode() for n in z.namelist()
               if n.endswith(".py") and (n.startswith("vllm/config/") or n in (
                   "vllm/engine/arg_utils.py", "vllm/entrypoints/common/cli_args.py"))}
    trees = [ast.parse(s) for s in src.values()]
    classes = _classes(trees)
    aliases = _literal_aliases(trees)
    config_classes = {n for n in classes if n.endswith("Config")}
    rows: dict[str, tuple[str, list | None]] = {}

    def field_type(cls_name: str, field: str):
        cls = classes.get(cls_name)
        ann = _fields(cls, classes).get(field) if cls else None
        return _vllm_type(ann, config_classes, aliases) if ann is not None else ("str", None)

    for path in ("vllm/engine/arg_utils.py", "vllm/entrypoints/common/cli_args.py"):
        tree = ast.parse(src[path])
        for fn in ast.walk(tree):
            if not isinstance(fn, ast.FunctionDef) or fn.name not in ("add_cli_args", "make_arg_parser"):
                continue
            kw_of: dict[str, tuple[str, str | None]] = {}   # var -> (class, field or None)
            for node in ast.walk(fn):
                if isinstance(node, ast.Assign) and isinstance(node.targets[0], ast.Name):
                    v = node.value
                    field = None
                    if isinstance(v, ast.Subscript):
                        field = _lit(v.slice)
                        v = v.value
                    if isinstance(v, ast.Call) and ast.unparse(v.func) == "get_kwargs" and v.args:
                        kw_of[node.targets[0].id] = (ast.unparse(v.args[0]), field)
                    elif isinstance(v, ast.Name) and v.id in kw_of and field:
                        kw_of[node.targets[0].id] = (kw_of[v.id][0], field)
            for node in ast.walk(fn):
                if not (isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute)
                        and node.func.attr == "add_argument"):
                    continue
                flags = [a.value for a in node.args if isinstance(a, ast.Constant) and isinstance(a.value, str)
                         and a.value.startswith("-")]
                if not flags:
                    continue
                typ: tuple[str, list | None] = ("str", None)
                for k in node.keywords:
                    if k.arg is None:        # **x_kwargs["field"], **x_kwargs or **{**x_kwargs["field"], ...}
                        v = k.value
                        if isinstance(v, ast.Dict):
                            v = next((val for key, val in zip(v.keys, v.values, strict=True) if key is None), v)
                        if isinstance(v, ast.Subscript) and isinstance(v.value, ast.Name) and v.value.id in kw_of:
                            typ = field_type(kw_of[v.value.id][0], _lit(v.slice))
                        elif isinstance(v, ast.Name) and v.id in kw_of and (fld := kw_of[v.id][1]):
                            typ = field_type(kw_of[v.id][0], fld)
                    elif k.arg == "action":
                        a = _lit(k.value) or ast.unparse(k.value)
                        if a in ("store_true", "store_false") or "StoreTrue" in str(a):
                            typ = ("flag", None)
                        elif "BooleanOptionalAction" in str(a):
                            typ = ("bool", None)
                    elif k.arg == "type":
                        t = ast.unparse(k.value)
                        typ = ({"int": "int", "float": "float"}.get(t, "str"), typ[1])
                    elif k.arg == "choices":
                        c = _lit(k.value)
                        if isinstance(c, (list, tuple)):
                            typ = (typ[0], list(c))
                _add(rows, flags, *typ)
    # FrontendArgs: every dataclass field becomes --field-name (cli_args.py add_cli_args loop)
    for cname in ("FrontendArgs",):
        for name, ann in _fields(classes[cname], classes).items():
            typ = _vllm_type(ann, config_classes, aliases)
            _add(rows, ["--" + name.replace("_", "-")], *typ)
    return rows


# ----------------------------------------------------------------------------------------------- SGLang
def _sglang_type(tp: ast.expr, aliases) -> tuple[str, list | None]:
    text = ast.unparse(tp)
    toks = set(re.findall(r"[A-Za-z_]+", text))
    lits = _literal_values(tp, aliases)
    if lits:
        return "str", lits
    if text.startswith(("list", "List", "Optional[list", "Optional[List")) or "list[" in text.lower():
        return "list", None
    if "bool" in toks:
        return "flag", None
    if "int" in toks:
        return "int", None
    if "float" in toks:
        return "float", None
    if "dict" in toks.union({t.lower() for t in toks}):
        return "json", None
    return "str", None


def extract_sglang(wheel: Path) -> dict[str, tuple[str, list | None]]:
    with zipfile.ZipFile(wheel) as z:
        src = {n: z.read(n).decode() for n in z.namelist()
               if n.startswith("sglang/srt/arg_groups/") and n.endswith(".py")
               or n == "sglang/srt/server_args.py"}
    trees = {n: ast.parse(s) for n, s in src.items()}
    aliases = _literal_aliases(list(trees.values()))
    rows: dict[str, tuple[str, list | None]] = {}
    for name, tree in trees.items():
        if not (name.startswith("sglang/srt/arg_groups/fields/") or name.endswith("server_args.py")):
            continue
        for node in ast.walk(tree):
            if not (isinstance(node, ast.AnnAssign) and isinstance(node.target, ast.Name)):
                continue
            ann = node.annotation
            if not (isinstance(ann, ast.Subscript) and ast.unparse(ann.value) in ("A", "Annotated")):
                continue
            elts = ann.slice.elts if isinstance(ann.slice, ast.Tuple) else [ann.slice]
            if len(elts) < 2:
                continue
            meta = elts[1]
            kw = {}
            if isinstance(meta, ast.Call) and ast.unparse(meta.func) == "Arg":
                kw = {k.arg: k.value for k in meta.keywords}
            elif not (isinstance(meta, (ast.Constant, ast.JoinedStr, ast.BinOp))):
                continue
            if kw.get("no_cli") is not None and _lit(kw["no_cli"]):
                continue
            cli = _lit(kw["cli_name"]) if "cli_name" in kw else "--" + node.target.id.replace("_", "-")
            names = [cli] + (_lit(kw["aliases"]) or [] if "aliases" in kw else [])
            typ, choices = _sglang_type(elts[0], aliases)
            if "action" in kw:
                a = ast.unparse(kw["action"])
                typ = "bool" if "BooleanOptional" in a else "flag" if "store_true" in a or "StoreTrue" in a else typ
            if "type_parser" in kw and typ == "list":
                typ = "str"
            if "nargs" in kw and _lit(kw["nargs"]) in ("*", "+"):
                typ = "list"
            if "choices" in kw:
                c = _lit(kw["choices"])
                if c is None and isinstance(kw["choices"], ast.Name):
                    c = aliases.get(kw["choices"].id)
                choices = list(c) if isinstance(c, (list, tuple)) else choices
            _add(rows, names, typ, choices)
    # explicit parser.add_argument(...) in ServerArgs.add_cli_args
    for node in ast.walk(trees["sglang/srt/server_args.py"]):
        if isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute) and node.func.attr == "add_argument":
            flags = [a.value for a in node.args if isinstance(a, ast.Constant) and str(a.value).startswith("-")]
            kws = {k.arg: k.value for k in node.keywords}
            typ = "str"
            action = ast.unparse(kws["action"]) if "action" in kws else ""
            if "store_true" in action or "StoreTrue" in action:
                typ = "flag"
            elif "type" in kws:
                typ = {"int": "int", "float": "float"}.get(ast.unparse(kws["type"]), "str")
            _add(rows, flags, typ, None)
    return rows


# ----------------------------------------------------------------------------------------------- llama.cpp
_STR = r'"(?:[^"\\]|\\.)*"'


def extract_llamacpp(arg_cpp: str, rpc_cpp: str) -> dict[str, tuple[str, list | None]]:
    rows: dict[str, tuple[str, list | None]] = {}
    for m in re.finditer(r"common_arg\(\s*\{([^}]*)\}\s*,\s*(?:\{([^}]*)\}\s*,\s*)?", arg_cpp):
        flags = re.findall(_STR, m.group(1))
        neg = re.findall(_STR, m.group(2) or "")
        rest = arg_cpp[m.end():m.end() + 4000]
        hint = None
        hm = re.match(rf"({_STR})\s*,\s*(?!\[)", rest)
        if hm and not neg:
            hint = hm.group(1)[1:-1]
        lam = re.search(r"\[\]\s*\(([^)]*)\)", rest)
        params = lam.group(1) if lam else ""
        if hint is None or neg:
            typ = "flag"
        elif re.search(r",\s*int\s+\w+\s*$", params):
            typ = "int"
        elif re.search(r",\s*float\s+\w+\s*$", params):
            typ = "float"
        else:
            typ = "str"
        choices = None
        cm = re.fullmatch(r"\[([a-z0-9+_|-]+)\]", hint or "")
        if cm:
            choices = cm.group(1).split("|")
        _add(rows, [f[1:-1] for f in flags], typ, choices)
        _add(rows, [f[1:-1] for f in neg], "flag", None)
    # ggml-rpc-server (tools/rpc/rpc-server.cpp), prefixed so the two binaries do not mix
    for m in re.finditer(r'arg == "(-[^"]+)"(?:\s*\|\|\s*arg == "(-[^"]+)")?', rpc_cpp):
        for f in m.groups():
            if f:
                rows["ggml-rpc-server " + f] = ("flag" if f in ("-c", "--cache", "-h", "--help") else "str", None)
    return rows


# ----------------------------------------------------------------------------------------------- ik_llama.cpp
_IK_HEAD = re.compile(r'^    (?:else )?if \((arg == "[^"]+"(?:\s*\|\|\s*arg == "[^"]+")*)\)\s*\{', re.M)


def extract_ik_llama(common_cpp: str) -> dict[str, tuple[str, list | None]]:
    """ik_llama.cpp's common/common.cpp gpt_params_find_arg: one `if (arg == "-x" || arg == "--y") {` block per
    option at function level. A block that calls CHECK_ARG takes a value: int when it is parsed with std::stoi /
    stoul / stoll before its first `return true`, float with std::stof / stod, otherwise a string (choices are
    not extracted); a block without CHECK_ARG is a flag."""
    rows: dict[str, tuple[str, list | None]] = {}
    heads = list(_IK_HEAD.finditer(common_cpp))
    for i, m in enumerate(heads):
        end = heads[i + 1].start() if i + 1 < len(heads) else len(common_cpp)
        body = common_cpp[m.end():end].split("return true", 1)[0]
        flags = re.findall(r'arg == "([^"]+)"', m.group(1))
        if "CHECK_ARG" not in body:
            typ = "flag"
        elif re.search(r"std::sto(?:i|ul|ll|l)\b", body):
            typ = "int"
        elif re.search(r"std::sto[fd]\b", body):
            typ = "float"
        else:
            typ = "str"
        _add(rows, flags, typ, None)
    return rows


def main_ik_llama(common_cpp: str, out_dir: str) -> None:
    """python tools/extract_flags.py ik_llama COMMON_CPP OUT_DIR, COMMON_CPP = common/common.cpp of
    ikawrakow/ik_llama.cpp at IK_LLAMA_COMMIT (`git show IK_LLAMA_COMMIT:common/common.cpp > common.cpp`)."""
    _write(Path(out_dir) / f"ik_llama-{IK_LLAMA_COMMIT[:9]}.txt", [
        f"ik_llama.cpp (github.com/ikawrakow/ik_llama.cpp at commit {IK_LLAMA_COMMIT}) llama-server flags,",
        "extracted by tools/extract_flags.py (extract_ik_llama) with regexes over common/common.cpp",
        "gpt_params_find_arg: `if (arg == \"-x\" || arg == \"--y\")` blocks; CHECK_ARG -> takes a value",
        "(std::stoi -> int, std::stof -> float, else str), no CHECK_ARG -> flag. Union over all example programs",
        "(llama-server uses it).",
        "Format: FLAG<TAB>TYPE; TYPE in int|float|str|flag (flag takes no value).",
        f"Refresh: git -C ik_llama.cpp show {IK_LLAMA_COMMIT}:common/common.cpp > /tmp/eng/ik-common.cpp; "
        "python tools/extract_flags.py ik_llama /tmp/eng/ik-common.cpp tests/data/engine_flags"],
        extract_ik_llama(Path(common_cpp).read_text()))


# ----------------------------------------------------------------------------------------------- desktop runtimes
# Sources are git checkouts at the commits named in optimizer/engines.py (read as text; nothing is copied):
#   ollama:    api/types.go (Options / Runner struct json tags = the Modelfile PARAMETER names, parsed by
#              api.FormatParams), envconfig/config.go (AsMap: the OLLAMA_* variables), cmd/cmd.go (flags of
#              `ollama create` and `ollama run`)
#   lms:       src/subcommands/load.ts, server.ts, src/createClient.ts, src/logLevel.ts (commander options)
#   mlx-lm:    mlx_lm/server.py (argparse)
_GO_TYPES = {"int": "int", "float32": "float", "float64": "float", "string": "str", "[]string": "str",
             "*int": "int", "*bool": "bool", "bool": "bool"}


def extract_ollama(types_go: str, config_go: str, cmd_go: str) -> dict[str, tuple[str, list | None]]:
    rows: dict[str, tuple[str, list | None]] = {}
    for struct in ("Options", "Runner"):
        body = re.search(rf"type {struct} struct \{{(.*?)\n\}}", types_go, re.S)
        if body is None:
            raise SystemExit(f"api/types.go: struct {struct} not found")
        for typ, name in re.findall(r"^\s*\w+\s+(\S+)\s+`json:\"([a-z_]+)[,\"]", body.group(1), re.M):
            rows[f"PARAMETER {name}"] = (_GO_TYPES.get(typ, "str"), None)
    amap = re.search(r"func AsMap\(\).*?\n\}", config_go, re.S)
    if amap is None:
        raise SystemExit("envconfig/config.go: AsMap not found")
    for name in re.findall(r'"(OLLAMA_[A-Z_]+)":', amap.group(0)):
        rows[f"ENV {name}"] = ("str", None)
    for cmd in ("create", "run", "serve"):
        pat = rf"{cmd}Cmd\.Flags\(\)\.(\w+?)P?\(\"([a-z-]+)\",\s*(?:\"(\w)\",)?"
        for kind, long, short in re.findall(pat, cmd_go):
            typ = {"String": "str", "Bool": "flag", "Int": "int"}.get(kind.rstrip("P"), "str")
            rows[f"ollama {cmd} --{long}"] = (typ, None)
            if short:
                rows[f"ollama {cmd} -{short}"] = (typ, None)
    return rows


_TS_OPT = re.compile(r'(?:new Option\(|\.option\()\s*"((?:-\w, )?--[a-z-]+)(?: <[^>]+>)?"')


def _ts_options(text: str) -> list[tuple[str, str]]:
    """(names, type) of commander options: a `<value>` placeholder takes a value (int when its argParser is
    createRefinedNumberParser({ integer: true ...}), float for other number parsers), else a flag."""
    out = []
    ms = list(re.finditer(r'(?:new Option\(|\.option\()\s*"((?:-\w, )?--[a-z-]+)( <[^>]+>)?"', text))
    for i, m in enumerate(ms):
        tail = text[m.end():ms[i + 1].start() if i + 1 < len(ms) else len(text)]
        typ = "flag"
        if m.group(2):
            typ = "str"
            if "createRefinedNumberParser" in tail:
                typ = "int" if "integer: true" in tail else "float"
        out.append((m.group(1), typ))
    return out


def extract_lms(sources: dict[str, str]) -> dict[str, tuple[str, list | None]]:
    """commander options of `lms load` (+ addCreateClientOptions, addLogLevelOptions) and `lms server start`
    (+ addLogLevelOptions)."""
    rows: dict[str, tuple[str, list | None]] = {}
    client, log = _ts_options(sources["createClient.ts"]), _ts_options(sources["logLevel.ts"])
    srv = sources["server.ts"]
    start = srv[srv.index('.name("start")'):srv.index('.name("stop")')]
    for sub, opts in (("load", _ts_options(sources["load.ts"]) + client + log),
                      ("server start", _ts_options(start) + log)):
        for names, typ in opts:
            for n in names.split(", "):
                rows[f"lms {sub} {n}"] = (typ, None)
    return rows


def extract_mlx_server(server_py: str) -> dict[str, tuple[str, list | None]]:
    rows: dict[str, tuple[str, list | None]] = {}
    for node in ast.walk(ast.parse(server_py)):
        if isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute) and node.func.attr == "add_argument":
            flags = [a.value for a in node.args if isinstance(a, ast.Constant) and str(a.value).startswith("-")]
            kws = {k.arg: k.value for k in node.keywords}
            typ = "str"
            if "action" in kws and "store_true" in ast.unparse(kws["action"]):
                typ = "flag"
            elif "type" in kws:
                typ = {"int": "int", "float": "float", "json.loads": "json"}.get(ast.unparse(kws["type"]), "str")
            choices = _lit(kws["choices"]) if "choices" in kws else None
            _add(rows, flags, typ, choices)
    return rows


def main_desktop(ollama_src: str, lms_src: str, mlx_src: str, out_dir: str) -> None:
    """python tools/extract_flags.py --desktop OLLAMA_CHECKOUT LMS_CHECKOUT MLX_LM_WHEEL OUT_DIR"""
    o, lm, mx, out = Path(ollama_src), Path(lms_src), Path(mlx_src), Path(out_dir)
    fmt = ("Format: NAME<TAB>TYPE[<TAB>choices]; TYPE in int|float|str|json|bool|flag (flag takes no value).")
    _write(out / f"ollama-{OLLAMA_VERSION}.txt", [
        f"Ollama {OLLAMA_VERSION} (ollama/ollama tag v{OLLAMA_VERSION}), extracted by "
        "tools/extract_flags.py:",
        "'PARAMETER x': Modelfile parameters = json tags of api/types.go Options and Runner (api.FormatParams);",
        "'ENV X': envconfig/config.go AsMap; 'ollama create|run|serve --x': cmd/cmd.go cobra flags.",
        fmt], extract_ollama((o / "api/types.go").read_text(), (o / "envconfig/config.go").read_text(),
                             (o / "cmd/cmd.go").read_text()))
    srcs = {p.name: p.read_text() for p in [lm / "src/subcommands/load.ts", lm / "src/subcommands/server.ts",
                                            lm / "src/createClient.ts", lm / "src/logLevel.ts"]}
    _write(out / f"lms-{LMS_VERSION}.txt", [
        f"LM Studio CLI lms {LMS_VERSION} (lmstudio-ai/lms), extracted by tools/extract_flags.py from the",
        "commander options of src/subcommands/load.ts, server.ts (start) and the shared createClient.ts / logLevel.ts.",
        fmt], extract_lms(srcs))
    main_mlx(str(mx), out_dir)


def main_mlx(wheel: str, out_dir: str) -> None:
    """python tools/extract_flags.py --mlx MLX_LM_WHEEL OUT_DIR: the released wheel users install
    (`pip download --no-deps -d /tmp/eng mlx-lm==MLX_LM_VERSION`), not a repository commit."""
    w = Path(wheel)
    if w.is_dir():
        w = next(w.rglob(f"mlx_lm-{MLX_LM_VERSION}-*.whl"))
    with zipfile.ZipFile(w) as z:
        server_py = z.read("mlx_lm/server.py").decode()
    fmt = ("Format: NAME<TAB>TYPE[<TAB>choices]; TYPE in int|float|str|json|bool|flag (flag takes no value).")
    _write(Path(out_dir) / f"mlx-lm-{MLX_LM_VERSION}.txt", [
        f"mlx-lm {MLX_LM_VERSION} `mlx_lm.server` flags, extracted by tools/extract_flags.py from the "
        f"PyPI wheel {w.name}:",
        "AST of mlx_lm/server.py (argparse add_argument calls). Refresh: pip download --no-deps -d /tmp/eng "
        f"mlx-lm=={MLX_LM_VERSION}; python tools/extract_flags.py --mlx /tmp/eng tests/data/engine_flags",
        fmt], extract_mlx_server(server_py))


# ----------------------------------------------------------------------------------------------- routers
def _argparse_flags(tree: ast.Module, prefix: str = "") -> dict[str, tuple[str, list | None]]:
    """Every `*.add_argument("--flag", ...)` call: literal flags, and f-strings with the `prefix` variable put
    in (sglang_router's `f"--{prefix}name"`, prefix "" for `launch_router`). Types: store_true/false -> flag,
    nargs (+, *, N) -> list, type=int/float -> int/float, else str; literal `choices` kept."""
    rows: dict[str, tuple[str, list | None]] = {}
    for node in ast.walk(tree):
        if not (isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute)
                and node.func.attr == "add_argument"):
            continue
        names = []
        for a in node.args:
            if isinstance(a, ast.Constant) and isinstance(a.value, str):
                names.append(a.value)
            elif isinstance(a, ast.JoinedStr):
                parts = []
                for v in a.values:
                    if isinstance(v, ast.Constant):
                        parts.append(str(v.value))
                    elif isinstance(v, ast.FormattedValue) and isinstance(v.value, ast.Name) \
                            and v.value.id == "prefix":
                        parts.append(prefix)
                    else:
                        parts = []
                        break
                if parts:
                    names.append("".join(parts))
        names = [n for n in names if n.startswith("-")]
        if not names:
            continue
        kw = {k.arg: k.value for k in node.keywords if k.arg}
        action = _lit(kw["action"]) if "action" in kw else None
        typ = "str"
        if action in ("store_true", "store_false"):
            typ = "flag"
        elif "nargs" in kw:
            typ = "list"
        elif "type" in kw and isinstance(kw["type"], ast.Name) and kw["type"].id in ("int", "float"):
            typ = kw["type"].id
        choices = _lit(kw["choices"]) if "choices" in kw else None
        _add(rows, names, typ, list(choices) if isinstance(choices, (list, tuple)) else None)
    return rows


def extract_sglang_router(wheel: Path) -> dict[str, tuple[str, list | None]]:
    """`python -m sglang_router.launch_router` flags: RouterArgs.add_cli_args in sglang_router/router_args.py."""
    with zipfile.ZipFile(wheel) as z:
        return _argparse_flags(ast.parse(z.read("sglang_router/router_args.py").decode()))


def extract_vllm_proxy(source: Path) -> dict[str, tuple[str, list | None]]:
    """vLLM's NIXL proxy (tests/v1/kv_connector/nixl_integration/toy_proxy_server.py): its parse_args()."""
    return _argparse_flags(ast.parse(source.read_text()))


def main_routers(src_dir: str, out_dir: str) -> None:
    """The router/proxy allow-lists: sglang_router-SGLANG_ROUTER_VERSION's wheel and vLLM's toy_proxy_server.py
    (a file of the vLLM source tree, not in the wheel: put it in SRC_DIR)."""
    src, out = Path(src_dir), Path(out_dir)
    fmt = ("Format: FLAG<TAB>TYPE[<TAB>choices]; TYPE in int|float|str|list|flag (flag takes no value, list one "
           "or more).")
    whl = next(src.rglob(f"sglang_router-{SGLANG_ROUTER_VERSION}-*.whl"))
    _write(out / f"sglang-router-{SGLANG_ROUTER_VERSION}.txt", [
        f"sglang-router {SGLANG_ROUTER_VERSION} `python -m sglang_router.launch_router` flags (the router SGLang "
        f"{SGLANG_VERSION}'s own PD test fixture starts,",
        "sglang/test/server_fixtures/disaggregation_fixture.py), extracted by tools/extract_flags.py from "
        f"{whl.name}:",
        "AST of sglang_router/router_args.py (RouterArgs.add_cli_args, f\"--{prefix}...\" with prefix ''). "
        "Router code is not copied.",
        fmt,
        f"Refresh: pip download --no-deps -d /tmp/eng sglang-router=={SGLANG_ROUTER_VERSION}; "
        "python tools/extract_flags.py routers /tmp/eng tests/data/engine_flags"],
        extract_sglang_router(whl))
    proxy = next(src.rglob("toy_proxy_server.py"))
    repo, path, commit = VLLM_PROXY_SOURCE
    _write(out / f"vllm-proxy-{VLLM_VERSION}.txt", [
        f"vLLM's NIXL disaggregation proxy ({path}, github.com/{repo} at commit {commit},",
        f"read for vLLM {VLLM_VERSION}; not part of the wheel: run it from that source tree) flags, extracted by",
        "tools/extract_flags.py from the AST of its parse_args(). Its --host defaults to 127.0.0.1.",
        fmt,
        "Refresh: put that file in /tmp/eng; python tools/extract_flags.py routers /tmp/eng "
        "tests/data/engine_flags"], extract_vllm_proxy(proxy))


# ----------------------------------------------------------------------------------------------- main
def main(src_dir: str, out_dir: str) -> None:
    src, out = Path(src_dir), Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    refresh = (f"Refresh: pip download --no-deps -d /tmp/eng vllm=={VLLM_VERSION} sglang=={SGLANG_VERSION}; "
               f"pip download --no-deps --no-binary :all: -d /tmp/eng llama-cpp-python=={LLAMACPP_PY}; "
               "python tools/extract_flags.py /tmp/eng tests/data/engine_flags")
    fmt = ("Format: FLAG<TAB>TYPE[<TAB>choices]; TYPE in int|float|str|json|list|flag|bool|optstr "
           "(flag/bool take no value).")
    whl = next(src.rglob(f"vllm-{VLLM_VERSION}-*.whl"))
    _write(out / f"vllm-{VLLM_VERSION}.txt", [
        f"vLLM {VLLM_VERSION} `vllm serve` flags, extracted by tools/extract_flags.py from the PyPI wheel "
        f"{whl.name}:",
        "AST of vllm/engine/arg_utils.py (add_cli_args: every add_argument literal flag; value types from the config",
        "dataclass field annotations in vllm/config/*.py, as _compute_kwargs derives them) and",
        "vllm/entrypoints/common/cli_args.py (make_arg_parser + FrontendArgs fields). Engine code is not copied.",
        fmt, refresh], extract_vllm(whl))
    whl = next(src.rglob(f"sglang-{SGLANG_VERSION}-*.whl"))
    _write(out / f"sglang-{SGLANG_VERSION}.txt", [
        f"SGLang {SGLANG_VERSION} `python -m sglang.launch_server` flags, extracted by "
        f"tools/extract_flags.py from {whl.name}:",
        "AST of sglang/srt/arg_groups/fields/*.py and server_args.py (A[type, Arg(...)] fields -> --field-name + "
        "aliases,",
        "as add_cli_args_from_dataclass does; bool -> store_true) plus the explicit add_argument calls in "
        "ServerArgs.add_cli_args.",
        fmt, refresh], extract_sglang(whl))
    sdist = next(src.rglob(f"llama_cpp_python-{LLAMACPP_PY}.tar.gz"))
    with tarfile.open(sdist) as t:
        base = f"llama_cpp_python-{LLAMACPP_PY}/vendor/llama.cpp/"
        arg_f, rpc_f = t.extractfile(base + "common/arg.cpp"), t.extractfile(base + "tools/rpc/rpc-server.cpp")
        if arg_f is None or rpc_f is None:
            raise SystemExit(f"{sdist}: common/arg.cpp or tools/rpc/rpc-server.cpp missing")
        arg_cpp, rpc_cpp = arg_f.read().decode(), rpc_f.read().decode()
    _write(out / f"llamacpp-{LLAMACPP_COMMIT}.txt", [
        f"llama.cpp {LLAMACPP_COMMIT} (vendored in {sdist.name}; its CHANGELOG: update llama.cpp to "
        f"ggml-org/llama.cpp@{LLAMACPP_COMMIT})",
        "flags, extracted by tools/extract_flags.py with regexes over common/arg.cpp (common_arg({...}, "
        "[VALUE_HINT,]",
        "help, [](common_params &, TYPE value)) and tools/rpc/rpc-server.cpp (lines prefixed 'ggml-rpc-server ').",
        "Union over all example programs (llama-server uses a subset).",
        fmt, refresh], extract_llamacpp(arg_cpp, rpc_cpp))


if __name__ == "__main__":
    if len(sys.argv) < 3:
        sys.exit("usage: python tools/extract_flags.py SRC OUT | routers SRC OUT | --desktop OLLAMA LMS MLX OUT")
    if sys.argv[1:2] == ["--desktop"]:
        main_desktop(*sys.argv[2:6])
    elif sys.argv[1:2] == ["--mlx"]:
        main_mlx(*sys.argv[2:4])
    elif sys.argv[1:2] == ["routers"]:
        main_routers(*sys.argv[2:4])
    elif sys.argv[1:2] == ["ik_llama"]:
        main_ik_llama(*sys.argv[2:4])
    else:
        main(*sys.argv[1:3])
