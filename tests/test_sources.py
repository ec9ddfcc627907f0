"""Provenance: code and data cite upstream sources (URL, issue, file at a commit), never the project's private notes.

Users do not have the developers' reference notes (the hardware / engine / model / hybrid-and-spec notes, their
config copies and seeds), yet catalogue `source` strings are printed to them (`rigopt cheapest` prints
"priced from: ... (<source>)"). So no shipped file may name those notes or the notes' private reference labels
(e.g. "W-Price1", "SKY-AWS", "MLE-N"), and every `source` field in the hardware catalogue must say something.
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[1]
SCANNED_DIRS = ("hardware", "models", "measurements", "optimizer", "bench", "scenarios", "tools", "docs", "tests")
TEXT_SUFFIXES = {".py", ".yaml", ".yml", ".json", ".md", ".txt", ".csv", ".sh", ".toml", ".jsonl", ".html", ".js"}
THIS_FILE = Path(__file__).resolve()

# The note files (by name or by their folder) and the reference labels the notes use in their source lists.
PRIVATE = re.compile(
    r"\b(?:engines|hardware|models|hybrid-and-spec|style)\.md\b"
    r"|shared/(?:reference|seeds)\b|\.\./shared\b|\bwork/shared\b"
    r"|\bW-(?:Price|Cloud|Mac|Spark|Strix|AMD|Gaudi|Azure|DDR|NVMe|PRO6000|H100NVL|H200|H20|NVTAB|AWScut|GCPdoc"
    r"|localrig4090|vf|5090|4090v3090|3090|6000Ada|7900)[a-z0-9]*\b"
    r"|\bSKY-(?:AWS|LAMBDA|RUNPOD|GCP|4019)\b|\bMLE-[AN]\b|\bCODE-3090\b|\bCAPBLK\b"
)


def _shipped_text_files() -> list[Path]:
    files = []
    for d in SCANNED_DIRS:
        for p in sorted((ROOT / d).rglob("*")):
            if p.is_file() and p.suffix in TEXT_SUFFIXES and p.resolve() != THIS_FILE \
                    and "__pycache__" not in p.parts:
                files.append(p)
    return files


def _readme_outside_contributing() -> str:
    """The README minus its `## Contributing` section (the contributor notes may talk about the notes)."""
    text = (ROOT / "README.md").read_text(encoding="utf-8")
    return re.sub(r"(?ms)^## Contributing\n.*?(?=^## )", "", text)


def _hits(text: str) -> list[str]:
    return sorted({m.group(0) for m in PRIVATE.finditer(text)})


def test_detector_recognises_the_private_references():
    """The pattern the scans below rely on catches each kind of reference and leaves upstream citations alone."""
    for bad in ("hardware.md MI325X row", "see engines.md §2.6", "(shared/reference/hybrid-and-spec.md)",
                "copy in shared/reference/configs/x.json", "models.md §1.3", "W-Price1", "W-Mac4; W-Strix1",
                "SKY-AWS", "MLE-N (xGMI)", "per CODE-3090", "../shared/seeds/000.txt", "../shared/configs/x.json"):
        assert _hits(bad), bad
    for ok in ("https://github.com/skypilot-org/skypilot-catalog/blob/00148f2/catalogs/v8/aws/vms.csv",
               "https://github.com/stas00/ml-engineering/blob/744d01e/network/README.md",
               "vllm-project/vllm docs/serving/data_parallel_deployment.md", "aiconfigurator l40s.yaml",
               "W-shaped curve", "the hardware catalogue", "AMD-W7900"):
        assert not _hits(ok), ok


def test_no_shipped_file_names_the_private_notes():
    files = _shipped_text_files()
    assert len(files) > 100  # the scan really walks the tree
    offenders = {}
    for p in files:
        try:
            text = p.read_text(encoding="utf-8")
        except UnicodeDecodeError:
            continue
        if hits := _hits(text):
            offenders[str(p.relative_to(ROOT))] = hits
    assert not offenders, f"cite the upstream source instead of the private notes: {offenders}"


def test_readme_outside_contributor_notes_names_no_private_notes():
    text = _readme_outside_contributing()
    assert "## Dependencies" in text and "## Contributing" not in text  # the section split worked
    assert not _hits(text)


def _source_fields(node, path=""):
    if isinstance(node, dict):
        for k, v in node.items():
            here = f"{path}/{k}"
            if isinstance(k, str) and (k == "source" or k.endswith("_source")):
                yield here, v
            yield from _source_fields(v, here)
    elif isinstance(node, list):
        for i, v in enumerate(node):
            yield from _source_fields(v, f"{path}[{i}]")


HARDWARE_FILES = sorted((ROOT / "hardware").glob("*.yaml"))


@pytest.mark.parametrize("path", HARDWARE_FILES, ids=lambda p: p.name)
def test_every_hardware_source_field_is_non_empty(path):
    data = yaml.safe_load(path.read_text(encoding="utf-8"))
    fields = list(_source_fields(data))
    empty = [where for where, v in fields if not isinstance(v, str) or not v.strip()]
    assert not empty, f"{path.name}: empty source at {empty}"
    if isinstance(data, list):  # catalogue tables: every row carries its own source
        rows = [r for r in data if isinstance(r, dict)]
        assert rows and all(isinstance(r.get("source"), str) and r["source"].strip() for r in rows)


def test_hardware_catalogue_has_sources_to_check():
    assert {p.name for p in HARDWARE_FILES} >= {"accelerators.yaml", "hosts.yaml", "interconnects.yaml",
                                               "nodes.yaml", "prices.yaml", "storage.yaml"}
