"""Quality tiers of the cost-quality frontier, by the bits per weight of a plan's experts / FFN.

The tiers follow how quantizations cluster (GGUF presets, FP4/INT4, FP8/INT8, BF16). The default headline floor is
the 4-bit tier: Unsloth's Dynamic 2.0 measurements (docs.unsloth.ai, "Unsloth Dynamic 2.0 GGUFs": KL divergence to
the BF16 model, Gemma 3 27B) fall from 1.04 at IQ1_S and 0.23-0.27 at 2-bit (IQ2_M, Q2_K_XL) to 0.088 at 3-bit
(Q3_K_XL) and 0.025 at 4-bit (Q4_K_XL); llama.cpp's own quantize help calls IQ1_S/IQ1_M "extremely low quality"
and the 2-bit i-quants "very low quality". Below 4 bits the loss grows several-fold per bit removed, so a buyer
sees those cheaper tiers listed, never chosen silently.
"""

from __future__ import annotations

from dataclasses import dataclass

from optimizer.errors import InputError


@dataclass(frozen=True)
class Tier:
    name: str
    lo_bits: float   # expert/FFN bits per weight, inclusive
    hi_bits: float   # exclusive

    def holds(self, bits: float) -> bool:
        return self.lo_bits <= bits < self.hi_bits


TIERS: tuple[Tier, ...] = (
    Tier("1.5-bit", 0.0, 1.9),    # IQ1_S 1.56, IQ1_M 1.75
    Tier("2-bit", 1.9, 2.8),      # IQ2_XXS 2.06, IQ2_XS 2.31, Q2_K 2.63
    Tier("3-bit", 2.8, 3.9),      # IQ3_XXS 3.06, Q3_K 3.44
    Tier("4-bit", 3.9, 5.0),      # IQ4_XS / MXFP4 4.25, Q4_K / NVFP4 / AWQ-128 4.5
    Tier("5-6-bit", 5.0, 7.0),    # Q5_K 5.5, Q6_K 6.56
    Tier("8-bit", 7.0, 9.0),      # Q8_0 8.5, FP8 block-128 8.0
    Tier("16-bit", 9.0, 1e9),     # BF16 / FP16
)
DEFAULT_HEADLINE_MIN_BITS = 3.9  # the 4-bit tier's floor (module docstring: why)


def tier_of(bits: float) -> Tier:
    for t in TIERS:
        if t.holds(bits):
            return t
    return TIERS[-1]


def tier_named(name: str) -> Tier:
    n = name.strip().lower().replace(" ", "")
    for t in TIERS:
        if t.name == n or t.name.replace("-bit", "") == n.replace("-bit", "").replace("bit", ""):
            return t
    raise InputError(f"unknown tier '{name}' (use {', '.join(t.name for t in TIERS)})")
