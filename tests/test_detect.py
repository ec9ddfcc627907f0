"""`rigopt detect` and `--owned local` on recorded-format tool outputs (tests/data/detect/, formats cited in its
README): each tool is a stub on a private PATH that checks its arguments and prints the recorded output; /proc and
/sys come from a temporary root. No test reads this machine's hardware."""

from __future__ import annotations

import json
import shutil
import stat
from pathlib import Path

import pytest
from typer.testing import CliRunner

import optimizer.detect as det
from optimizer.cli import app
from optimizer.detect import NVIDIA_QUERY, detect
from optimizer.detect.match import match_apple, match_gpu
from optimizer.hetero.inventory import parse_inventory
from optimizer.solver.query import Owned

DATA = Path(__file__).parent / "data" / "detect"
CAT = shutil.which("cat") or "/bin/cat"
ARGS = {
    "nvidia-smi": f"--query-gpu={NVIDIA_QUERY} --format=csv,noheader,nounits",
    "rocm-smi": "--showproductname --showmeminfo vram --json",
    "system_profiler": "SPDisplaysDataType SPHardwareDataType -json",
    "lscpu": "",
    "dmidecode": "-t memory",
}
runner = CliRunner()


def stub(bin_dir: Path, tool: str, body: str) -> None:
    p = bin_dir / tool
    p.write_text("#!/bin/sh\n" + body + "\n")
    p.chmod(p.stat().st_mode | stat.S_IXUSR)


def machine(tmp_path: Path, name: str, only: dict[str, str] | None = None) -> tuple[Path, str]:
    """(fake root, fake PATH) for a recorded machine: a stub per `<tool>.out`, files.json under the root."""
    root, bin_dir = tmp_path / "root", tmp_path / "bin"
    root.mkdir()
    bin_dir.mkdir()
    folder = DATA / name
    for out in sorted(folder.glob("*.out")):
        tool = out.stem
        src = out
        if only and tool in only:
            src = tmp_path / out.name
            src.write_text(only[tool])
        stub(bin_dir, tool, f'[ "$*" = "{ARGS[tool]}" ] || {{ echo "unexpected arguments: $*" >&2; exit 9; }}\n'
                            f'exec {CAT} "{src}"')
    for rel, text in json.loads((folder / "files.json").read_text()).items():
        f = root / rel
        f.parent.mkdir(parents=True, exist_ok=True)
        f.write_text(text)
    return root, str(bin_dir)


def test_linux_nvidia_box(tmp_path):
    root, path = machine(tmp_path, "linux-nvidia")
    m = detect(root, path)
    keys = [g.catalogue_key for g in m.gpus]
    # nvidia-smi's four cards in index order, then the AMD iGPU only sysfs lists (no rocm-smi on this machine)
    assert keys == ["rtx-4090", "rtx-4090-48gb", "rtx-3090", None, None]
    g0, g1 = m.gpus[0], m.gpus[1]
    assert g0.memory_bytes == 24564 * 2**20 and g1.memory_bytes == 49128 * 2**20      # MiB from nvidia-smi
    assert (g0.pcie_gen_max, g0.pcie_width_max, g0.pcie_gen_current, g1.pcie_width_current) == (4, 16, 1, 8)
    assert "RTX 4060 Ti" in m.gpus[3].name and m.gpus[3].match == "no catalogue accelerator has this name"
    igpu = m.gpus[4]
    assert igpu.source == "sysfs" and igpu.bus_id == "0000:10:00.0" and igpu.pcie_gen_current == 4  # 16.0 GT/s
    assert len(m.unknown) == 2
    # lscpu: 1 socket x 16 cores per socket, 32 CPUs
    assert m.cpu.model == "AMD Ryzen 9 7950X 16-Core Processor"
    assert (m.cpu.sockets, m.cpu.cores, m.cpu.threads) == (1, 16, 32)
    # dmidecode: two populated 32 GB (GiB) DDR5 DIMMs on CHANNEL A and B, configured at 5200 MT/s
    mem = m.memory
    assert (mem.dimms, mem.installed_bytes, mem.ddr, mem.speed_mt_s, mem.channels) == (2, 64 * 2**30, "DDR5", 5200, 2)
    assert mem.total_bytes == 65056768 * 1024  # MemTotal kB
    # NVMe: 3,907,029,168 sectors x 512 B = 2,000,398,934,016 B, link 16 GT/s (Gen4) x4
    (nv,) = m.nvme
    assert (nv.model, nv.size_bytes, nv.pcie_gen, nv.pcie_width) == ("Samsung SSD 990 PRO 2TB", 2000398934016, 4, 4)
    assert m.inventory == "1x rtx-4090, 1x rtx-4090-48gb, 1x rtx-3090, 64GiB ddr5"
    inv = parse_inventory(m.inventory)  # the string is what --owned reads
    assert [g.acc.key for g in inv.gpus] == ["rtx-4090", "rtx-4090-48gb", "rtx-3090"]
    assert inv.boxes[0].dram_bytes == 64 * 2**30


def test_linux_amd_box_without_lscpu_or_dmidecode(tmp_path):
    root, path = machine(tmp_path, "linux-amd")
    m = detect(root, path)
    assert [g.catalogue_key for g in m.gpus] == ["radeon-pro-w7900", "rx-7900-xtx", None]
    # the 20 GB RX 7900 XT shares the XTX's series string; its 21,458,059,264 B is 0.89x of the XTX's 24 GB
    assert "does not match the catalogue's rx-7900-xtx" in m.gpus[2].match
    # /proc/cpuinfo: 48 logical CPUs, core ids 0..23 on physical id 0
    assert (m.cpu.sockets, m.cpu.cores, m.cpu.threads, m.cpu.source) == (1, 24, 48, "/proc/cpuinfo")
    # MemTotal 131,595,744 kB = 134,754,041,856 B = 125.5 GiB -> 125 GiB (no DIMM data, so no DDR type)
    assert m.inventory == "1x radeon-pro-w7900, 1x rx-7900-xtx, 125GiB"
    for missing in ("nvidia-smi: not found on PATH", "lscpu: not found on PATH", "dmidecode: not found on PATH",
                    "/sys/bus/pci/devices: not readable"):
        assert missing in m.unread


def test_mac_m4_max(tmp_path):
    root, path = machine(tmp_path, "mac-m4-max")
    m = detect(root, path)
    (g,) = m.gpus
    assert g.catalogue_key == "m4-max-128gb" and g.name == "Apple M4 Max (40-core GPU)"
    assert g.memory_bytes == 128 * 2**30  # "128 GB" as Apple states it (binary)
    assert (m.cpu.cores, m.cpu.source) == (16, "system_profiler")  # "proc 16:12:4"
    assert m.inventory == "1x m4-max-128gb"  # unified memory: no separate DRAM item
    assert Owned.parse(m.inventory).accelerators == {"m4-max-128gb": 1}


def test_nothing_readable_says_so(tmp_path):
    m = detect(tmp_path, str(tmp_path / "empty-bin"))
    assert m.gpus == [] and m.inventory is None
    assert "nvidia-smi: not found on PATH" in m.unread and "/proc/meminfo: not readable" in m.unread
    assert any("no GPU or accelerator found" in u for u in m.unread)


def test_failing_and_hanging_tools_are_bounded(tmp_path, monkeypatch):
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    stub(bin_dir, "nvidia-smi", "echo 'NVIDIA-SMI has failed because it couldn'\"'\"'t communicate with the NVIDIA "
                                "driver.' >&2; exit 9")
    stub(bin_dir, "rocm-smi", f"exec {shutil.which('sleep') or '/bin/sleep'} 30")
    monkeypatch.setattr(det, "TOOL_TIMEOUT_S", 0.5)
    m = detect(tmp_path, str(bin_dir))
    assert any(u.startswith("nvidia-smi: exit code 9 (NVIDIA-SMI has failed") for u in m.unread)
    assert "rocm-smi: no answer within 0.5 s" in m.unread


@pytest.mark.parametrize("name, mem, key", [
    ("NVIDIA H100 80GB HBM3", 81559 * 2**20, "h100-sxm"),
    ("NVIDIA H800", 81559 * 2**20, "h800-sxm"),
    ("NVIDIA H800 PCIe", 81559 * 2**20, "h800-pcie"),
    ("NVIDIA A100-SXM4-40GB", 40960 * 2**20, "a100-40gb-sxm"),
    ("NVIDIA A100 80GB PCIe", 81920 * 2**20, "a100-80gb-pcie"),
    ("Tesla V100-SXM2-32GB", 32510 * 2**20, "v100-sxm2-32gb"),
    ("Tesla V100-PCIE-16GB", 16160 * 2**20, "v100-pcie-16gb"),
    ("Tesla V100S-PCIE-32GB", 32510 * 2**20, None),
    ("NVIDIA GH200 480GB", 97871 * 2**20, "gh200-96gb"),
    ("NVIDIA GeForce RTX 4090 D", 24564 * 2**20, "rtx-4090d"),
    ("NVIDIA GeForce RTX 3090 Ti", 24564 * 2**20, None),
    ("NVIDIA RTX PRO 6000 Blackwell Workstation Edition", 97887 * 2**20, "rtx-pro-6000"),
    ("AMD Instinct MI300X", 205822885888, "mi300x"),
])
def test_name_rules(name, mem, key):
    assert match_gpu(name, mem)[0] == key


def test_apple_keys_need_a_catalogue_configuration():
    assert match_apple("Apple M3 Max", 36)[0] == "m3-max-36gb"
    assert match_apple("Apple M2 Ultra", 192)[0] == "m2-ultra-192gb"
    assert match_apple("Apple M4 Pro", 24)[0] is None  # no M4 Pro row: reported, not guessed


def test_cli_detect_json_and_owned_local(tmp_path, monkeypatch):
    one_4090 = (DATA / "linux-nvidia" / "nvidia-smi.out").read_text().splitlines()[0] + "\n"
    root, path = machine(tmp_path, "linux-nvidia", only={"nvidia-smi": one_4090})
    monkeypatch.setattr(det, "DEFAULT_ROOT", root)
    monkeypatch.setenv("PATH", path)
    r = runner.invoke(app, ["detect", "--json"])
    assert r.exit_code == 0, r.output
    d = json.loads(r.output)
    assert d["schema_id"] == "rigopt.detect/1" and d["inventory"] == "1x rtx-4090, 64GiB ddr5"
    r = runner.invoke(app, ["cheapest", "qwen3-8b", "--owned", "local", "-c", "8K", "--json"])
    assert r.exit_code == 0, r.output
    best = json.loads(r.output)["plan"]
    assert best["hardware"]["accelerator"] == "rtx-4090" and best["hardware"]["owned"] is True


def test_owned_local_without_accelerator_is_one_error(tmp_path, monkeypatch):
    monkeypatch.setattr(det, "DEFAULT_ROOT", tmp_path)
    monkeypatch.setenv("PATH", str(tmp_path / "none"))
    r = runner.invoke(app, ["cheapest", "qwen3-8b", "--owned", "local"])
    assert r.exit_code != 0
    assert "--owned local: no catalogue accelerator detected" in str(r.exception)


def test_detect_fills_in_the_host_and_names_what_it_could_not_read(tmp_path):
    from optimizer.catalog.host_spec import parse_host
    from optimizer.detect import Cpu, Memory, host_spec_string
    root, path = machine(tmp_path, "linux-nvidia")
    m = detect(root, path)
    # lscpu: 1 socket, 16 cores; dmidecode: CHANNEL A and B, 5200 MT/s, 2 x 32 GiB = 68.72 GB installed
    assert m.host == "cpu=AMD Ryzen 9 7950X 16-Core Processor,sockets=1,cores=16,channels=2,mt=5200,dram=68.7"
    assert m.host_unknown == []
    h = parse_host(m.host).resolve()  # what `--host` reads: 2 channels x 5200 MT/s x 8 B
    assert h.socket_bw_bytes_per_s == 2 * 5200e6 * 8 and h.dram_bytes == 68.7e9 and h.cores_per_socket == 16
    # no dmidecode: channels and speed unknown (the catalogue row fills them in), DRAM from MemTotal
    (tmp_path / "amd").mkdir()
    a = detect(*machine(tmp_path / "amd", "linux-amd"))
    assert a.host == "cpu=AMD Ryzen Threadripper 7960X 24-Cores,sockets=1,cores=24,dram=134.8"  # 134,754,041,856 B
    assert any("channels" in u for u in a.host_unknown) and any("speed" in u for u in a.host_unknown)
    assert any("MemTotal" in u for u in a.host_unknown)
    # unified-memory Macs have no separate host; nothing readable gives no spec and says why
    (tmp_path / "mac").mkdir()
    assert detect(*machine(tmp_path / "mac", "mac-m4-max")).host is None
    assert host_spec_string(Cpu(), Memory()) == (None, ["CPU model (neither lscpu nor /proc/cpuinfo was readable)"])
    # vendor marks and commas do not break the comma form; an unknown CPU without channels says it cannot resolve
    spec, unknown = host_spec_string(Cpu(model="Intel(R) Xeon(R) CPU E5-2630 v4, 2.20GHz", sockets=2, cores=20),
                                     Memory(total_bytes=256 * 10**9))
    assert spec == "cpu=Intel Xeon CPU E5-2630 v4 2.20GHz,sockets=2,cores=10,dram=256.0"
    assert any(u.startswith("the spec does not resolve") for u in unknown)
