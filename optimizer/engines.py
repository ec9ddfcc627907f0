"""The engine versions rigopt's exporters, allow-lists and contract tests are pinned to, and the engine vocabulary
(which engines exist, which physics each one runs, where each one runs): the one place they live.

`bench/engines.sh` reads the version assignments with `ast` (keep them plain string literals).
"""

VLLM_VERSION = "0.33.0"
SGLANG_VERSION = "0.5.23"
LLAMACPP_COMMIT = "0c1e57098"           # ggml-org/llama.cpp commit vendored in the llama-cpp-python sdist below
LLAMA_CPP_PYTHON_VERSION = "0.3.36"     # its CHANGELOG: "update llama.cpp to ggml-org/llama.cpp@0c1e57098"
# ollama/ollama tag v0.33.0-rc2, commit fb30760996871fa9460115c753afd2c60d4ab0f7
OLLAMA_VERSION = "0.33.0-rc2"
# lmstudio-ai/lms (the `lms` CLI) package.json at commit 07b7252d6de26a3a58c1bb80ed7e75a2b17f5eb6
LMS_VERSION = "0.3.43"
# PyPI wheel mlx_lm-0.32.0-py3-none-any.whl (what `pip install mlx-lm==0.32.0` installs; its mlx_lm/server.py
# is what tests/data/engine_flags/mlx-lm-0.32.0.txt is extracted from)
MLX_LM_VERSION = "0.32.0"

# ikawrakow/ik_llama.cpp (llama.cpp fork: its own quant types IQ*_K / IQ*_KS / IQ*_KT and *_R4 repacks, fused MoE
# on by default, -mla, -amb, -rtr, -ot); flags read from common/common.cpp (gpt_params_find_arg) at this commit
IK_LLAMA_COMMIT = "8337e4cd3861406fc04e0854b1409cd1b027fbc9"

# routers in front of disaggregated (PD) fleets (optimizer/export/fleet.py; allow-lists in tests/data/engine_flags/)
SGLANG_ROUTER_VERSION = "0.3.2"         # PyPI sglang-router: `python -m sglang_router.launch_router`
# vLLM's NIXL PD proxy is a file of the vLLM source tree, not of the wheel: (repository, path, commit read)
VLLM_PROXY_SOURCE = ("vllm-project/vllm", "tests/v1/kv_connector/nixl_integration/toy_proxy_server.py",
                     "030ea52effcb05071543c8c42b8f0145e94cee43")

ENGINE_VERSIONS: dict[str, str] = {"vllm": VLLM_VERSION, "sglang": SGLANG_VERSION, "llamacpp": LLAMACPP_COMMIT,
                                   "ollama": OLLAMA_VERSION, "lmstudio": LMS_VERSION, "mlx": MLX_LM_VERSION,
                                   "ik_llama": IK_LLAMA_COMMIT[:9]}

# Every engine key rigopt knows, in display order.
ENGINES: tuple[str, ...] = ("vllm", "sglang", "llamacpp", "ik_llama", "ollama", "lmstudio", "mlx")
# Engines `cheapest` tries when --engine is not given (the desktop runtimes are asked for by name).
DEFAULT_SOLVER_ENGINES: tuple[str, ...] = ("vllm", "sglang", "llamacpp")
# Engines that run llama.cpp underneath and therefore share its KV layout, compute buffers, GGUF weights and
# fitted speed factors: Ollama 0.33 launches the upstream `llama-server` (ollama llm/llama_server.go "All GGML
# models are served via the upstream llama-server subprocess"); LM Studio's llama.cpp engine (its MLX engine is
# the `mlx` key here, selected by an MLX quantization); ik_llama.cpp, a fork of llama.cpp (ikawrakow/ik_llama.cpp:
# the same llama-server, GGUF and KV layout). ik_llama's own speed effects (fused MoE, -rtr repacking) are not
# fitted separately: it uses llama.cpp's factors until rows of its own are fitted.
LLAMACPP_FAMILY: frozenset[str] = frozenset({"llamacpp", "ik_llama", "ollama", "lmstudio"})
# llama.cpp-family engines that place tensors themselves (-ot / --n-cpu-moe: experts in host memory, CPU-computed)
TENSOR_PLACING: frozenset[str] = frozenset({"llamacpp", "ik_llama"})
# Engines that run only on Apple silicon (Metal): mlx-lm ("MLX is an array framework for machine learning on
# Apple silicon", ml-explore/mlx README). MLX's CUDA backend exists but mlx-lm on NVIDIA is not modelled.
APPLE_ONLY: frozenset[str] = frozenset({"mlx"})

_ALIASES = {"llamacpp": "llamacpp", "llama": "llamacpp", "llamaserver": "llamacpp", "vllm": "vllm",
            "ikllama": "ik_llama", "ikllamacpp": "ik_llama",
            "sglang": "sglang", "ollama": "ollama", "lmstudio": "lmstudio", "lms": "lmstudio",
            "mlx": "mlx", "mlxlm": "mlx"}


def engine_key(name: str) -> str | None:
    """The engine key for a user-typed name (llama.cpp, LM-Studio, mlx_lm, ...), None if unknown."""
    return _ALIASES.get(name.lower().replace(".", "").replace("-", "").replace("_", "").replace(" ", ""))


def is_llamacpp(engine: str) -> bool:
    """True for engines that run llama.cpp's physics (llama.cpp itself, Ollama, LM Studio's llama.cpp engine)."""
    return engine in LLAMACPP_FAMILY


def physics_engine(engine: str) -> str:
    """The engine whose fitted speed factors and memory layout an engine uses: llama.cpp for Ollama, LM Studio and
    ik_llama.cpp; MLX keeps its own key (factors fall back to llama.cpp's, see estimate/factors.py)."""
    return "llamacpp" if engine in LLAMACPP_FAMILY else engine


def runs_on_vendor(engine: str, vendor: str) -> bool:
    """Whether an engine runs on an accelerator vendor at all (mlx: Apple only)."""
    return vendor == "apple" if engine in APPLE_ONLY else True
