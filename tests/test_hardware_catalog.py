"""Tests for the hardware catalogue: data sanity, lookups, prices, and loader error reporting."""

from __future__ import annotations

import re
import shutil
from pathlib import Path

import pytest
import yaml
from pydantic import ValidationError

from optimizer.catalog import hardware as hw
from optimizer.catalog.hardware import (
    cloud_usd_per_gpu_hour,
    get_accelerator,
    get_host,
    get_interconnect,
    get_node,
    load_hardware,
    node_capex_usd,
    node_power_watts,
    purchase_usd,
)
from optimizer.catalog.hardware_schema import Accelerator, Price
from optimizer.catalog.paths import data_dir
from optimizer.errors import CatalogError
from optimizer.units import GB, GiB, MiB

REQUIRED_ACCELERATORS = """
h100-sxm h100-pcie h100-nvl h200-sxm h200-nvl h20 b200 b300 gb200 gb300 a100-40gb-sxm a100-80gb-sxm
a100-40gb-pcie a100-80gb-pcie l40s l4 a10g rtx-3090 rtx-4090 rtx-5090 rtx-pro-6000 rtx-6000-ada dgx-spark
mi300x mi325x mi355x rx-7900-xtx gaudi3 m2-ultra-192gb m3-ultra-256gb m3-ultra-512gb m4-max-128gb
ryzen-ai-max-395-128gb
""".split()

REQUIRED_NODES = """
hgx-h100-8 hgx-h200-8 hgx-b200-8 hgx-b300-8 gb200-nvl72 hgx-a100-80-8 hgx-a100-40-8 h20-8 mi300x-8 mi325x-8
mi355x-8 pcie-l40s-8 pcie-rtx-pro-6000-8 pcie-h100-pcie-8 pcie-a100-80-pcie-8 pcie-l4-8 pcie-h100-nvl-8
mac-studio-m3-ultra-512 mac-studio-m3-ultra-256 mac-studio-m2-ultra-192 mac-studio-m4-max-128 dgx-spark
framework-desktop-395
""".split() + [f"ws-{g}-{n}" for g in ("rtx-3090", "rtx-4090", "rtx-5090", "rtx-pro-6000", "rtx-6000-ada")
               for n in (1, 2, 4)]

REQUIRED_HOSTS = """
epyc-9004-12ch-ddr5-4800 epyc-9005-12ch-ddr5-6000 xeon-spr-8ch-ddr5-4800 xeon-6900p-12ch-ddr5-6400
xeon-6900p-12ch-mrdimm-8800 xeon-6700p-8ch-ddr5-6400 desktop-am5-2ch-ddr5 desktop-intel-2ch-ddr5
threadripper-7000-8ch-ddr5 grace
""".split()

AS_OF_RE = re.compile(r"^\d{4}-(0[1-9]|1[0-2])(-\d{2})?$")


@pytest.fixture(scope="module")
def cat():
    return load_hardware()


# ------------------------------------------------------------------ catalogue contents

def test_catalogue_loads_with_all_tables(cat):
    assert len(cat.accelerators) >= len(REQUIRED_ACCELERATORS)
    assert cat.interconnects and cat.hosts and cat.storage and cat.nodes and cat.prices


@pytest.mark.parametrize("key", REQUIRED_ACCELERATORS)
def test_required_accelerator_exists(cat, key):
    assert key in cat.accelerators


def test_required_nodes_hosts_storage_exist(cat):
    assert set(REQUIRED_NODES) <= set(cat.nodes)
    assert set(REQUIRED_HOSTS) <= set(cat.hosts)
    assert {"nvme-gen4-x4", "nvme-gen5-x4", "nvme-gen5-dc"} <= set(cat.storage)
    for key in ["pcie4-x16", "pcie5-x16", "pcie6-x16", "nvlink3", "nvlink4", "nvlink5", "nvlink-bridge-3090",
                "nvlink-bridge-h100-nvl", "nvlink-c2c", "xgmi-mi300", "xgmi-mi355", "ib-hdr", "ib-ndr", "ib-xdr",
                "roce-200", "roce-400", "eth-10g", "eth-25g", "eth-100g", "thunderbolt5", "usb4", "unified"]:
        assert key in cat.interconnects, key
    assert any(i.kind == "efa" for i in cat.interconnects.values())


def test_key_figures_match_reference(cat):
    a = cat.accelerators
    assert a["rtx-5090"].memory_bytes == 32 * GB  # conflicts section: never 48
    assert a["h100-sxm"].memory_bw_bytes_per_s == 3.35e12
    assert a["h100-sxm"].memory_usable_bytes == 81_559 * MiB
    assert cat.interconnects["nvlink4"].bw_bytes_per_s == 450e9
    assert cat.interconnects["nvlink5"].bw_bytes_per_s == 900e9
    assert a["b200"].memory_usable_bytes == 183_359 * MiB
    assert a["b200"].bf16_flops == 2250e12  # not the 4,500 sparse figure (conflict 7)
    assert a["h200-sxm"].memory_usable_bytes == 144_384 * MiB
    assert a["b300"].memory_usable_bytes == 275_040 * MiB
    assert a["l40s"].memory_usable_bytes == 46_068 * MiB
    assert a["rtx-pro-6000"].memory_usable_bytes == 97_887 * MiB
    assert a["rtx-pro-6000"].memory_bw_bytes_per_s == 1.792e12 and a["rtx-pro-6000"].tdp_watts == 600
    assert a["rtx-4090"].memory_bw_bytes_per_s == 1.008e12 and a["rtx-4090"].bf16_flops == 165e12
    assert a["rtx-3090"].memory_bw_bytes_per_s == 0.936e12
    assert a["mi325x"].memory_bytes == 256 * GB
    assert a["mi300x"].scaleup_bw_bytes_per_s == 448e9
    assert a["gaudi3"].memory_bytes == 128 * GB and a["gaudi3"].bf16_flops == 1677e12
    assert a["dgx-spark"].memory_bw_bytes_per_s == 273e9 and a["dgx-spark"].scaleup is None
    assert a["m3-ultra-512gb"].memory_usable_bytes == 384 * GiB  # 75 % wired-limit default
    assert a["ryzen-ai-max-395-128gb"].memory_usable_bytes == 108 * GB
    assert cat.hosts["epyc-9004-12ch-ddr5-4800"].dram_bw_bytes_per_s == 460.8e9


def test_units_are_plain_bytes_and_flops(cat):
    for a in cat.accelerators.values():
        assert a.memory_bytes >= 16 * GB, a.key  # catches "80" written instead of 80e9
        assert a.memory_bw_bytes_per_s >= 100e9, a.key
        assert a.bf16_flops >= 10e12, a.key
        for f in (a.fp8_flops, a.fp4_flops):
            assert f is None or f >= a.bf16_flops, a.key
    for i in cat.interconnects.values():
        assert i.bw_bytes_per_s >= 1e8 and i.latency_s < 1e-3, i.key
    for h in cat.hosts.values():
        assert h.dram_bw_bytes_per_s >= 50e9 and h.max_dram_bytes >= 32 * GB, h.key  # M4 Max 14-core: 36 GB


def test_host_bandwidth_is_channels_times_speed(cat):
    for h in cat.hosts.values():
        if h.key == "grace":  # LPDDR5X channel count is a nominal equivalent (see notes)
            continue
        theoretical = h.memory_channels * h.memory_mt_per_s * 1e6 * 8
        assert h.dram_bw_bytes_per_s == pytest.approx(theoretical, rel=0.03), h.key


def test_scaleup_bandwidth_matches_interconnect(cat):
    for a in cat.accelerators.values():
        if a.scaleup is not None:
            assert a.scaleup_bw_bytes_per_s == cat.interconnects[a.scaleup].bw_bytes_per_s, a.key


def test_every_row_has_source_and_prices_have_as_of(cat):
    tables = [cat.accelerators, cat.interconnects, cat.hosts, cat.storage, cat.nodes]
    for table in tables:
        for row in table.values():
            assert row.source.strip(), row.key
    for p in cat.prices:
        assert p.source.strip() and AS_OF_RE.match(p.as_of), p
    for row in [*cat.hosts.values(), *cat.storage.values(), *cat.nodes.values()]:
        priced = getattr(row, "platform_usd", None) or getattr(row, "usd", None) or getattr(row, "node_base_usd", None)
        if priced is not None:
            assert row.as_of and AS_OF_RE.match(row.as_of), row.key


def test_estimates_explain_themselves(cat):
    rows = [*cat.accelerators.values(), *cat.interconnects.values(), *cat.hosts.values(),
            *cat.storage.values(), *cat.nodes.values(), *cat.prices]
    for row in rows:
        if row.estimate or getattr(row, "usable_estimate", False):
            assert row.notes.strip(), row


def test_node_references_resolve(cat):
    for n in cat.nodes.values():
        acc = cat.accelerators[n.accelerator]
        assert n.host in cat.hosts
        assert n.nic is None or n.nic in cat.interconnects
        assert n.nvme is None or n.nvme in cat.storage
        assert (acc.kind == "unified") == (n.scaleup_domain == "unified"), n.key
        if n.scaleup_domain == "switch":
            assert acc.scaleup is not None, n.key
    assert cat.nodes["gb200-nvl72"].scaleup_domain_size == 72
    assert cat.nodes["hgx-h100-8"].scaleup_domain_size == 8
    assert cat.nodes["pcie-h100-nvl-8"].scaleup_domain == "pairs"
    assert cat.nodes["ws-rtx-3090-2"].scaleup_domain == "pairs"
    assert cat.nodes["ws-rtx-4090-4"].scaleup_domain == "none"


def test_price_items_resolve(cat):
    for p in cat.prices:
        table = cat.nodes if p.unit == "per_node" else cat.accelerators
        assert p.item in table, p


def test_every_sold_accelerator_has_a_purchase_price(cat):
    not_sold_separately = {"a10g"}  # AWS-only part
    # issue 17 rows with no price a source gives (used-market or OEM-only parts, configurations whose price was not
    # found): they are planned as owned hardware or rented, never bought
    not_sold_separately |= {"h800-pcie", "gh200-96gb", "gh200-144gb", "v100-sxm2-16gb", "v100-sxm2-32gb",
                            "v100-pcie-16gb", "v100-pcie-32gb", "gaudi2", "radeon-pro-w7900", "m1-ultra-128gb",
                            "m2-ultra-128gb", "m3-max-36gb", "m3-max-96gb", "m3-max-48gb", "m3-max-64gb",
                            "m3-max-128gb", "m4-max-48gb", "m4-max-64gb"}
    for key in cat.accelerators:
        if key not in not_sold_separately:
            assert purchase_usd(key) is not None, key


def test_aliases_are_unique(cat):
    seen: dict[str, str] = {}
    for a in cat.accelerators.values():
        for name in [a.key, *a.aliases]:
            assert seen.setdefault(name, a.key) == a.key, name


# ------------------------------------------------------------------ lookups

@pytest.mark.parametrize("name,key", [
    ("RTX 4090", "rtx-4090"), ("4090", "rtx-4090"), ("rtx4090", "rtx-4090"), ("h100", "h100-sxm"),
    ("H100_SXM", "h100-sxm"), ("  H100 SXM ", "h100-sxm"), ("5090", "rtx-5090"), ("pro6000", "rtx-pro-6000"),
    ("spark", "dgx-spark"), ("m3-ultra", "m3-ultra-512gb"), ("M3 Ultra 256GB", "m3-ultra-256gb"),
    ("MI300X", "mi300x"), ("Gaudi 3", "gaudi3"), ("strix-halo", "ryzen-ai-max-395-128gb"),
])
def test_get_accelerator_by_key_or_alias(name, key):
    assert get_accelerator(name).key == key


def test_typo_suggests_close_names():
    with pytest.raises(CatalogError) as exc:
        get_accelerator("h10")
    assert "h100-sxm" in exc.value.did_you_mean
    assert "did you mean" in str(exc.value) and "h10" in str(exc.value)


def test_other_lookups():
    assert get_node("HGX H100 8").key == "hgx-h100-8"
    assert get_host("grace").key == "grace"
    assert get_interconnect("NVLink4").key == "nvlink4"
    with pytest.raises(CatalogError) as exc:
        get_node("hgx-h100-9")
    assert "hgx-h100-8" in exc.value.did_you_mean


# ------------------------------------------------------------------ prices, capex, power

def test_purchase_price_preference_is_deterministic():
    h100 = purchase_usd("h100-sxm")
    assert h100 is not None and not h100.estimate and h100.usd == 25_000  # non-estimate, newest
    b200 = purchase_usd("b200")
    assert b200 is not None and b200.usd == 40_000  # both estimates: newest wins over the $70k outlier
    assert purchase_usd("a10g") is None
    assert purchase_usd("h100-sxm") == purchase_usd("h100-sxm")


def test_cloud_price_is_cheapest_on_demand():
    h100 = cloud_usd_per_gpu_hour("h100-sxm")
    assert h100 is not None and not h100.spot and h100.unit == "per_gpu"
    all_h100 = [p for p in load_hardware().prices if p.kind == "cloud" and p.item == "h100-sxm" and not p.spot]
    assert h100.usd_per_hour == min(p.usd_per_hour for p in all_h100)
    b200 = cloud_usd_per_gpu_hour("b200")
    assert b200 is not None and b200.usd_per_hour > 2.25  # the $2.25 row is spot
    assert cloud_usd_per_gpu_hour("h100-nvl") is None  # only a spot price is known
    assert cloud_usd_per_gpu_hour("l4").usd_per_hour == pytest.approx(0.8048)


def test_node_capex_and_power(cat):
    node = cat.nodes["hgx-h100-8"]
    assert node_capex_usd("hgx-h100-8") == pytest.approx(node.node_base_usd + 8 * 25_000)
    assert node_power_watts("hgx-h100-8") == pytest.approx(node.node_base_watts + 8 * 700)
    assert node_capex_usd("gb200-nvl72") == pytest.approx(3.1e6, rel=0.01)
    # the 512 GB Mac Studio was withdrawn (2026-03): no new-purchase capex, but the historical price stays
    assert purchase_usd("m3-ultra-512gb").available is False
    assert node_capex_usd("mac-studio-m3-ultra-512") is None
    assert node_capex_usd("mac-studio-m3-ultra-512", include_unavailable=True) == purchase_usd("m3-ultra-512gb").usd
    assert node_capex_usd("mac-studio-m4-max-128") == purchase_usd("m4-max-128gb").usd
    for n in cat.nodes.values():
        if n.scaleup_domain == "unified":
            assert n.node_base_usd == 0 and n.dram_bytes == 0, n.key
        assert node_power_watts(n.key) > 0


# ------------------------------------------------------------------ schema and loader errors

def test_schema_rejects_bad_rows():
    good = load_hardware().accelerators["rtx-5090"].model_dump()
    with pytest.raises(ValidationError):
        Accelerator.model_validate({**good, "vram_gb": 32})  # extra key
    with pytest.raises(ValidationError):
        Accelerator.model_validate({**good, "memory_usable_bytes": 32})  # GB/GiB-style unit slip
    with pytest.raises(ValidationError):
        Price.model_validate({"kind": "purchase", "item": "h100-sxm", "unit": "per_unit",
                              "usd_per_hour": 2.0, "as_of": "2026-01", "source": "x"})
    with pytest.raises(ValidationError):
        Price.model_validate({"kind": "cloud", "item": "h100-sxm", "unit": "per_gpu", "usd_per_hour": 2.0,
                              "as_of": "June 2026", "source": "x"})
    row = load_hardware().accelerators["h100-sxm"]
    with pytest.raises(ValidationError):
        row.memory_bytes = 1  # frozen


@pytest.fixture
def data_copy(tmp_path, monkeypatch):
    """A copy of the hardware folder under RIGOPT_DATA_DIR; caches cleared before and after."""
    shutil.copytree(data_dir("hardware"), tmp_path / "hardware")
    monkeypatch.setenv("RIGOPT_DATA_DIR", str(tmp_path))
    data_dir.cache_clear()
    load_hardware.cache_clear()
    yield tmp_path / "hardware"
    data_dir.cache_clear()
    load_hardware.cache_clear()


def _edit(path: Path, fn) -> None:
    rows = yaml.safe_load(path.read_text())
    fn(rows)
    path.write_text(yaml.safe_dump(rows, sort_keys=False))


def _row(rows: list, key: str) -> dict:
    return next(r for r in rows if r.get("key") == key)


def test_copied_tree_loads_from_env(data_copy):
    assert load_hardware().accelerators["rtx-5090"].memory_bytes == 32 * GB
    assert data_dir("hardware") == data_copy


def test_malformed_field_names_file_entry_and_field(data_copy):
    _edit(data_copy / "accelerators.yaml", lambda rows: _row(rows, "rtx-5090").update(memory_bytes="lots"))
    with pytest.raises(CatalogError) as exc:
        load_hardware()
    msg = str(exc.value)
    assert "accelerators.yaml" in msg and "rtx-5090" in msg and "memory_bytes" in msg


def test_extra_key_rejected(data_copy):
    _edit(data_copy / "nodes.yaml", lambda rows: _row(rows, "hgx-h100-8").update(gpus=8))
    with pytest.raises(CatalogError) as exc:
        load_hardware()
    assert "nodes.yaml" in str(exc.value) and "hgx-h100-8" in str(exc.value) and "gpus" in str(exc.value)


def test_price_without_as_of_rejected(data_copy):
    _edit(data_copy / "prices.yaml", lambda rows: rows[0].pop("as_of"))
    with pytest.raises(CatalogError) as exc:
        load_hardware()
    assert "prices.yaml" in str(exc.value) and "as_of" in str(exc.value)


def test_unknown_reference_rejected_with_suggestion(data_copy):
    _edit(data_copy / "nodes.yaml", lambda rows: _row(rows, "hgx-h100-8").update(accelerator="h100-sxn"))
    with pytest.raises(CatalogError) as exc:
        load_hardware()
    assert "hgx-h100-8" in str(exc.value) and "accelerator" in str(exc.value)
    assert "h100-sxm" in exc.value.did_you_mean


def test_duplicate_alias_rejected(data_copy):
    _edit(data_copy / "accelerators.yaml", lambda rows: _row(rows, "rtx-5090").update(aliases=["4090"]))
    with pytest.raises(CatalogError) as exc:
        load_hardware()
    assert "alias" in str(exc.value) and "4090" in str(exc.value)


def test_duplicate_key_rejected(data_copy):
    _edit(data_copy / "hosts.yaml", lambda rows: rows.append(dict(rows[0])))
    with pytest.raises(CatalogError) as exc:
        load_hardware()
    assert "hosts.yaml" in str(exc.value) and "duplicate" in str(exc.value)


def test_invalid_yaml_rejected(data_copy):
    (data_copy / "storage.yaml").write_text("- key: [unclosed\n")
    with pytest.raises(CatalogError) as exc:
        load_hardware()
    assert "storage.yaml" in str(exc.value)


def test_unquoted_yaml_date_is_accepted(data_copy):
    path = data_copy / "prices.yaml"
    path.write_text(path.read_text().replace('as_of: "2026-06-29"', "as_of: 2026-06-29"))
    assert any(p.as_of == "2026-06-29" for p in load_hardware().prices)


def test_module_exposes_public_api():
    for name in ["load_hardware", "get_accelerator", "get_node", "get_host", "get_interconnect",
                 "purchase_usd", "cloud_usd_per_gpu_hour", "node_capex_usd", "node_power_watts"]:
        assert callable(getattr(hw, name))
