"""The engine versions rigopt's exporters, allow-lists and contract tests are pinned to: the one place they live.

`bench/engines.sh` reads these assignments with `ast` (keep them plain string literals).
"""

VLLM_VERSION = "0.33.0"
SGLANG_VERSION = "0.5.23"
LLAMACPP_COMMIT = "0c1e57098"           # ggml-org/llama.cpp commit vendored in the llama-cpp-python sdist below
LLAMA_CPP_PYTHON_VERSION = "0.3.36"     # its CHANGELOG: "update llama.cpp to ggml-org/llama.cpp@0c1e57098"

# routers in front of disaggregated (PD) fleets (optimizer/export/fleet.py; allow-lists in tests/data/engine_flags/)
SGLANG_ROUTER_VERSION = "0.3.2"         # PyPI sglang-router: `python -m sglang_router.launch_router`
# vLLM's NIXL PD proxy is a file of the vLLM source tree, not of the wheel: (repository, path, commit read)
VLLM_PROXY_SOURCE = ("vllm-project/vllm", "tests/v1/kv_connector/nixl_integration/toy_proxy_server.py",
                     "030ea52effcb05071543c8c42b8f0145e94cee43")

ENGINE_VERSIONS: dict[str, str] = {"vllm": VLLM_VERSION, "sglang": SGLANG_VERSION, "llamacpp": LLAMACPP_COMMIT}
