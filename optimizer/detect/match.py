"""Detected device names -> catalogue accelerator keys, by explicit rules (never by guessing).

A rule is (pattern on the lower-cased name the tool printed, catalogue key); the first matching rule wins and its
key is accepted only when the detected memory agrees with the catalogue's (within 0.9x..1.15x of the marketed
capacity: tools report GiB-based totals slightly above marketed decimal GB, less a reserved slice). A name no rule
matches, or whose memory disagrees, is reported as unknown with what was seen; it is left out of the inventory.

Names are those the vendors' tools print: nvidia-smi `name` ("NVIDIA GeForce RTX 4090", "NVIDIA H100 80GB HBM3",
"NVIDIA A100-SXM4-80GB", "Tesla V100-SXM2-32GB", "NVIDIA GeForce RTX 4090 D"), rocm-smi `Card Series`
("Navi 31 [Radeon RX 7900 XT/7900 XTX]", "Navi 31 [Radeon Pro W7900]", "AMD Instinct MI300X"), system_profiler
`chip_type` ("Apple M4 Max").
"""

from __future__ import annotations

import re

from optimizer.catalog.hardware import load_hardware
from optimizer.errors import CatalogError

# (regex, key). Order matters: specific variants before the generic name.
RULES: list[tuple[str, str]] = [
    (r"\bgh200\b.*\b144\s*gb|\bgh200\b.*hbm3e", "gh200-144gb"),
    (r"\bgh200\b", "gh200-96gb"),
    (r"\bgb300\b", "gb300"), (r"\bgb200\b", "gb200"), (r"\bb300\b", "b300"), (r"\bb200\b", "b200"),
    (r"\bh200\b.*\bnvl\b", "h200-nvl"), (r"\bh200\b", "h200-sxm"),
    (r"\bh100\b.*\bnvl\b", "h100-nvl"), (r"\bh100\b.*\bpcie\b", "h100-pcie"), (r"\bh100\b", "h100-sxm"),
    (r"\bh800\b.*\bpcie\b", "h800-pcie"), (r"\bh800\b", "h800-sxm"),
    (r"\bh20\b", "h20"),
    (r"\ba100\b.*\bpcie\b.*\b40\s*gb|\ba100\b.*\b40\s*gb.*\bpcie\b", "a100-40gb-pcie"),
    (r"\ba100\b.*\bpcie\b|\ba100\b.*\b80\s*gb.*\bpcie\b", "a100-80gb-pcie"),
    (r"\ba100\b.*\b40\s*gb", "a100-40gb-sxm"), (r"\ba100\b", "a100-80gb-sxm"),
    (r"\bv100-pcie-32gb\b|\bv100\b.*\bpcie\b.*\b32\s*gb", "v100-pcie-32gb"),
    (r"\bv100-pcie-16gb\b|\bv100\b.*\bpcie\b", "v100-pcie-16gb"),
    (r"\bv100-sxm2-32gb\b|\bv100\b.*\b32\s*gb", "v100-sxm2-32gb"),
    (r"\bv100-sxm2-16gb\b|\bv100\b(?!s)", "v100-sxm2-16gb"),
    (r"\bl40s\b", "l40s"), (r"\bl4\b", "l4"), (r"\ba10g\b", "a10g"),
    (r"\brtx 4090 ?d\b", "rtx-4090d"),
    (r"\brtx 4090\b(?! ti)", "rtx-4090"),   # the 48 GB modified card is told apart by its memory (below)
    (r"\brtx 3090\b(?! ti)", "rtx-3090"), (r"\brtx 5090\b", "rtx-5090"),
    (r"\brtx pro 6000\b", "rtx-pro-6000"), (r"\brtx a6000\b", "rtx-a6000"), (r"\brtx 6000 ada\b", "rtx-6000-ada"),
    (r"\bmi355x\b", "mi355x"), (r"\bmi325x\b", "mi325x"), (r"\bmi300x\b", "mi300x"),
    (r"\bw7900\b", "radeon-pro-w7900"),
    (r"\b7900 xtx\b|\b7900 xt/7900 xtx\b", "rx-7900-xtx"),
    (r"\bgaudi ?2\b|\bhl-225", "gaudi2"), (r"\bgaudi ?3\b|\bhl-325", "gaudi3"),
]

# Same name, more memory: community-modified cards (rtx-4090 with 48 GB of GDDR6X).
MEMORY_VARIANTS: dict[str, list[str]] = {"rtx-4090": ["rtx-4090-48gb"]}

_APPLE = re.compile(r"apple (m\d+) (max|ultra|pro)?", re.I)


def _memory_ok(key: str, memory_bytes: int | None) -> bool:
    if memory_bytes is None:
        return True  # nothing to disagree with (sysfs names without a memory figure)
    acc = load_hardware().accelerators.get(key)
    return acc is not None and 0.9 * acc.memory_bytes <= memory_bytes <= 1.15 * acc.memory_bytes


def match_gpu(name: str, memory_bytes: int | None) -> tuple[str | None, str]:
    """(catalogue key or None, a note saying how it was decided)."""
    n = " ".join(name.lower().replace("geforce", " ").replace("nvidia", " ").split())
    hw = load_hardware().accelerators
    for pattern, key in RULES:
        if not re.search(pattern, n):
            continue
        for k in [key, *MEMORY_VARIANTS.get(key, [])]:
            if k in hw and _memory_ok(k, memory_bytes):
                if k != key:
                    return k, f"name matches {key}, its memory the {k} variant"
                return k, f"name matches {k}" + ("" if memory_bytes is None else " and so does its memory")
        gb = f"{memory_bytes / 1e9:.1f} GB" if memory_bytes else "unknown memory"
        return None, f"name looks like {key} but {gb} does not match the catalogue's {key}"
    return None, "no catalogue accelerator has this name"


def match_apple(chip: str, memory_gb: int | None) -> tuple[str | None, str]:
    """Apple silicon: the catalogue keys are m{N}-{max|ultra}-{memory}gb (memory and bandwidth per configuration)."""
    m = _APPLE.search(chip)
    if m is None or memory_gb is None:
        return None, "not an Apple silicon chip name with a memory size"
    key = f"{m.group(1).lower()}-{(m.group(2) or 'base').lower()}-{memory_gb}gb"
    try:
        load_hardware().accelerators[key]
    except KeyError:
        return None, f"no catalogue entry {key} ({chip} with {memory_gb} GB)"
    return key, f"chip and memory match {key}"


def check_key(key: str) -> str:
    """A detected key must be a catalogue key (guards the rules above against typos)."""
    if key not in load_hardware().accelerators:
        raise CatalogError(f"detect rule names unknown accelerator {key}")
    return key
