#!/usr/bin/env bash
# Engine contract tests against the real pinned engines (vLLM, SGLang, llama.cpp's llama-server).
#
#   bash bench/engines.sh            # install what is missing under $RIGOPT_ENGINES_DIR, then run pytest -m engines
#
# Everything is installed under RIGOPT_ENGINES_DIR (default: /tmp/rigopt-engines), never in the repository:
#   vllm/     a venv with vllm (CPU machine: only its argument parser and engine-config code are used)
#   sglang/   a venv with sglang (only prepare_server_args is used)
#   llama.cpp llama-server built from the llama-cpp-python sdist's vendored llama.cpp, CPU only
#   rigopt/   a venv with this checkout installed (editable) and its test extras
# Re-running reuses what a previous run installed (one marker file per step).
# The versions come from optimizer/engines.py (the one place engine versions live).
set -euo pipefail
ROOT="$(cd "$(dirname "$0")/.." && pwd)"
B="${RIGOPT_ENGINES_DIR:-/tmp/rigopt-engines}"
JOBS="${JOBS:-2}"
mkdir -p "$B"
PY="${PYTHON:-python3}"

version() {  # version <key>: the pinned version from optimizer/engines.py, read without installing rigopt
  "$PY" - "$ROOT" "$1" <<'PYEOF'
import ast, sys
tree = ast.parse(open(f"{sys.argv[1]}/optimizer/engines.py").read())
for node in tree.body:
    if isinstance(node, ast.Assign) and getattr(node.targets[0], "id", "") == sys.argv[2]:
        print(ast.literal_eval(node.value))
PYEOF
}
VLLM_VERSION="$(version VLLM_VERSION)"
SGLANG_VERSION="$(version SGLANG_VERSION)"
SGLANG_ROUTER_VERSION="$(version SGLANG_ROUTER_VERSION)"
LLAMA_CPP_PYTHON_VERSION="$(version LLAMA_CPP_PYTHON_VERSION)"
LLAMACPP_COMMIT="$(version LLAMACPP_COMMIT)"
echo "engines: vllm==$VLLM_VERSION sglang==$SGLANG_VERSION llama.cpp $LLAMACPP_COMMIT (llama-cpp-python==$LLAMA_CPP_PYTHON_VERSION sdist)"
echo "build dir: $B"

step() { echo; echo "== $(date -u +%H:%M:%S) $*"; }

venv_with() {  # venv_with <dir> <pip args...>
  local dir="$1"; shift
  if [ -f "$dir/.installed" ] && [ "$(cat "$dir/.installed")" = "$*" ]; then
    echo "reusing $dir ($*)"; return
  fi
  rm -rf "$dir"
  "$PY" -m venv "$dir"
  "$dir/bin/python" -m pip install --quiet --upgrade pip
  "$dir/bin/python" -m pip install --quiet "$@"
  echo "$*" > "$dir/.installed"
}

step "vLLM $VLLM_VERSION venv"
venv_with "$B/vllm" "vllm==$VLLM_VERSION"
# Ray: the exported ray.sh variant (--distributed-executor-backend ray) needs it for create_engine_config
"$B/vllm/bin/python" -c "import ray" 2>/dev/null || "$B/vllm/bin/python" -m pip install --quiet ray
"$B/vllm/bin/python" -c "import vllm, torch, ray; print('vllm', vllm.__version__, 'torch', torch.__version__, 'ray', ray.__version__)"

step "SGLang $SGLANG_VERSION venv"
venv_with "$B/sglang" "sglang==$SGLANG_VERSION" "sglang-router==$SGLANG_ROUTER_VERSION"  # the PD/replica router
"$B/sglang/bin/python" -c "import importlib.metadata as m; print('sglang', m.version('sglang'), 'sglang-router', m.version('sglang-router'))"

step "llama-server from llama-cpp-python==$LLAMA_CPP_PYTHON_VERSION (vendored llama.cpp $LLAMACPP_COMMIT)"
LLAMA_SERVER="$B/llama.cpp/build/bin/llama-server"
if [ ! -x "$LLAMA_SERVER" ]; then
  rm -rf "$B/llama.cpp" "$B/sdist"
  mkdir -p "$B/sdist"
  "$PY" -m pip download --quiet --no-binary :all: --no-deps -d "$B/sdist" "llama-cpp-python==$LLAMA_CPP_PYTHON_VERSION"
  tar -xzf "$B"/sdist/llama_cpp_python-*.tar.gz -C "$B/sdist"
  mv "$B"/sdist/llama_cpp_python-*/vendor/llama.cpp "$B/llama.cpp"
  cmake -S "$B/llama.cpp" -B "$B/llama.cpp/build" -DCMAKE_BUILD_TYPE=Release -DGGML_CUDA=OFF -DGGML_METAL=OFF \
    -DLLAMA_CURL=OFF -DLLAMA_BUILD_TESTS=OFF -DLLAMA_BUILD_EXAMPLES=OFF -DBUILD_SHARED_LIBS=OFF > "$B/cmake-configure.log"
  cmake --build "$B/llama.cpp/build" --target llama-server -j "$JOBS" > "$B/cmake-build.log"
fi
"$LLAMA_SERVER" --version 2>&1 | head -2 || true

step "rigopt venv"
venv_with "$B/rigopt" -e "$ROOT[test]"

step "pytest -m engines"
cd "$ROOT"
RIGOPT_VLLM_PYTHON="$B/vllm/bin/python" RIGOPT_SGLANG_PYTHON="$B/sglang/bin/python" RIGOPT_LLAMA_SERVER="$LLAMA_SERVER" \
  "$B/rigopt/bin/python" -m pytest -m engines -p no:cacheprovider -rs -v tests/test_engines.py "$@"
