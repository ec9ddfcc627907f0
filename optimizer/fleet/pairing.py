"""Which prefill pool may feed which decode pool (disaggregated serving): the one pairing rule.

A prefill replica hands its KV cache to a decode replica; both must speak the same transfer protocol and be
joined by a network that exists. rigopt pairs two pools only when all of these hold, and otherwise refuses:

- **the same engine**: the KV-transfer protocols are engine-specific. vLLM's P/D runs a KV connector
  (NixlConnector: a NIXL handshake carrying vLLM's own agent metadata and block layout, vllm@0f12075
  vllm/distributed/kv_transfer/kv_connector/v1/nixl_connector.py); SGLang's decode server registers with the
  prefill server's bootstrap server and pulls pages in SGLang's own layout (sglang@ad7733e
  python/sglang/srt/disaggregation/common/conn.py). A vLLM prefill pool cannot feed an SGLang decode pool.
- **the same GPU software stack** (CUDA with CUDA, ROCm with ROCm): no source rigopt knows shows a ROCm
  prefill pool handing KV to a CUDA decode pool, so such a pairing is unverified and refused.
- **one site**: rented pools from the same provider, or owned servers (one site, the slower of the two units'
  KV links between them). Two providers have no fabric between them (their InfiniBand/EFA does not leave the
  provider's network); rigopt has no catalogue of WAN links between providers, so it refuses the pairing rather
  than assume one.

`group(...)` gives every (offer, engine) a key; a prefill and a decode row may serve together only with equal
keys (`compatible`). The CP-SAT model uses at most one group for its disaggregated pools.
"""

from __future__ import annotations

from optimizer.catalog.hardware import load_hardware

VLLM_NIXL_SRC = ("https://github.com/vllm-project/vllm/blob/0f120751344c09af442c1800020908d2b7ff71f2/"
                 "vllm/distributed/kv_transfer/kv_connector/v1/nixl_connector.py")
SGLANG_PD_SRC = ("https://github.com/sgl-project/sglang/blob/ad7733e47421ebbed796513921a7b39e8be0a697/"
                 "python/sglang/srt/disaggregation/common/conn.py")

STACK = {"nvidia": "cuda", "amd": "rocm"}


def site(offer_key: str) -> str:
    """Where a unit stands: `rent:<provider>` for a rented instance, `own` for a bought server."""
    if offer_key.startswith("rent:"):
        return "rent:" + offer_key[len("rent:"):].split("/", 1)[0]
    return "own"


def stack(accelerator: str) -> str:
    vendor = load_hardware().accelerators[accelerator].vendor
    return STACK.get(vendor, vendor)


def group(offer_key: str, accelerator: str, engine: str) -> str:
    """The pairing key of a pool: prefill and decode pools pair only within one key."""
    return f"{site(offer_key)}|{stack(accelerator)}|{engine}"


def compatible(a: str | None, b: str | None) -> bool:
    """Two rows may serve one disaggregated fleet together (None: a row without a pairing key, e.g. a test row)."""
    return a is None or b is None or a == b


def why_not(prefill: str, decode: str) -> str | None:
    """The reason a prefill pool of key `prefill` cannot feed a decode pool of key `decode` (None: it can)."""
    (ps, pk, pe), (ds, dk, de) = prefill.split("|"), decode.split("|")
    if pe != de:
        return f"a {pe} prefill pool cannot feed a {de} decode pool (engine-specific KV-transfer protocols)"
    if pk != dk:
        return f"no verified KV transfer from {pk.upper()} prefill to {dk.upper()} decode"
    if ps != ds:
        return f"no fabric between {ps} and {ds} (KV cannot cross providers over their InfiniBand/EFA)"
    return None
