"""`rigopt detect`: the local machine as an inventory that `--owned` reads.

Sources, each optional (what cannot be read is listed in `unread`, with why):
- GPUs: `nvidia-smi --query-gpu=index,name,memory.total,pcie.link.gen.max,pcie.link.width.max,
  pcie.link.gen.current,pcie.link.width.current,pci.bus_id --format=csv,noheader,nounits` (one CSV line per GPU,
  memory in MiB; fields as listed by `nvidia-smi --help-query-gpu`, https://docs.nvidia.com/deploy/nvidia-smi/);
  `rocm-smi --showproductname --showmeminfo vram --json` ({"card0": {"Card Series": ..., "VRAM Total Memory (B)":
  ...}}, key case varies by ROCm release; https://rocm.docs.amd.com/projects/rocm_smi_lib/); `system_profiler
  SPDisplaysDataType SPHardwareDataType -json` on macOS (`chip_type`, `physical_memory` "128 GB", `sppci_cores`);
  sysfs `/sys/bus/pci/devices/*/` for display-class devices (`class` 0x03xxxx, `vendor`, `device`,
  `current_link_speed` "16.0 GT/s PCIe", `current_link_width`, `max_link_*`; Linux
  Documentation/ABI/testing/sysfs-bus-pci) for the PCIe link and for cards no vendor tool reported.
- CPU: `lscpu` (Model name, Socket(s), Core(s) per socket, Thread(s) per core), else /proc/cpuinfo.
- DRAM: /proc/meminfo MemTotal (kB = KiB); `dmidecode -t memory` when readable (root): populated DIMMs, their size,
  DDR type and speed, channels from the Bank Locator's "CHANNEL X".
- NVMe: /sys/class/nvme/nvme*/ (model, namespaces' `size` in 512-byte sectors, the controller's PCIe link).

Every tool runs as an argument list (never a shell) with a timeout and bounded output; tests inject a fake PATH
and a fake root for /proc and /sys.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import subprocess
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict

from optimizer.detect.match import match_apple, match_gpu
from optimizer.errors import InputError
from optimizer.limits import (
    MAX_DETECTED_DEVICES,
    MAX_NESTING,
    MAX_NUMBER_CHARS,
    MAX_SIZE_BYTES,
    MAX_TOOL_OUTPUT_BYTES,
    clip_for_message,
    json_shape,
)

DEFAULT_ROOT = Path("/")
TOOL_TIMEOUT_S = 10.0
MAX_TOOL_OUTPUT = MAX_TOOL_OUTPUT_BYTES
MAX_FILE_BYTES = MAX_TOOL_OUTPUT_BYTES
NVIDIA_QUERY = ("index,name,memory.total,pcie.link.gen.max,pcie.link.width.max,pcie.link.gen.current,"
                "pcie.link.width.current,pci.bus_id")
MAX_NAME = 256  # characters of a device name kept from a tool's output
VENDORS = {"0x10de": "nvidia", "0x1002": "amd", "0x8086": "intel", "0x1da3": "habana", "0x106b": "apple"}
GT_S_TO_GEN = {"2.5": 1, "5.0": 2, "8.0": 3, "16.0": 4, "32.0": 5, "64.0": 6}


class _M(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class Gpu(_M):
    index: int
    name: str
    source: str  # nvidia-smi | rocm-smi | system_profiler | sysfs
    memory_bytes: int | None = None
    pcie_gen_max: int | None = None
    pcie_width_max: int | None = None
    pcie_gen_current: int | None = None
    pcie_width_current: int | None = None
    bus_id: str | None = None
    catalogue_key: str | None = None
    match: str = ""


class Cpu(_M):
    model: str | None = None
    sockets: int | None = None
    cores: int | None = None     # physical cores, all sockets
    threads: int | None = None   # logical CPUs
    source: str = ""


class Memory(_M):
    total_bytes: int | None = None        # MemTotal (what the kernel manages; below the installed size)
    installed_bytes: int | None = None    # sum of populated DIMMs (dmidecode)
    dimms: int | None = None
    ddr: str | None = None                # DDR4, DDR5, LPDDR5, ...
    speed_mt_s: int | None = None         # configured speed of the populated DIMMs (lowest)
    channels: int | None = None
    source: str = ""


class Nvme(_M):
    name: str
    model: str | None = None
    size_bytes: int | None = None
    pcie_gen: int | None = None
    pcie_width: int | None = None


class Machine(_M):
    schema_id: str = "rigopt.detect/1"
    gpus: list[Gpu]
    cpu: Cpu
    memory: Memory
    nvme: list[Nvme]
    inventory: str | None  # the `--owned` string: known accelerators and DRAM; None when no accelerator is known
    unknown: list[str]     # devices seen that match no catalogue accelerator
    unread: list[str]      # sources that could not be read, and why
    host: str | None = None        # the `--host` spec of this machine's CPU and DRAM (host_spec_string)
    host_unknown: list[str] = []   # host fields that could not be read (the spec leaves them to the catalogue row)




class Probe:
    """Where to look: `root` stands for / (its proc/ and sys/), `path` for $PATH (where tools are found)."""

    def __init__(self, root: str | os.PathLike | None = None, path: str | None = None):
        self.root = Path(root) if root is not None else DEFAULT_ROOT
        self.path = path if path is not None else os.environ.get("PATH", "")
        self.unread: list[str] = []

    def file(self, rel: str) -> str | None:
        p = self.root / rel
        try:
            with open(p, "rb") as f:
                return f.read(MAX_FILE_BYTES).decode("utf-8", "replace")
        except OSError:
            return None

    def run(self, argv: list[str]) -> str | None:
        """stdout of a tool, or None (noting why in `unread`)."""
        exe = shutil.which(argv[0], path=self.path)
        if exe is None:
            self.unread.append(f"{argv[0]}: not found on PATH")
            return None
        try:
            proc = subprocess.Popen([exe, *argv[1:]], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                    stdin=subprocess.DEVNULL, env={"PATH": self.path, "LC_ALL": "C"},
                                    start_new_session=True)
        except OSError as e:
            self.unread.append(f"{argv[0]}: cannot run ({e.strerror or type(e).__name__})")
            return None
        out, err, timed_out = _bounded_output(proc)
        if timed_out:
            self.unread.append(f"{argv[0]}: no answer within {TOOL_TIMEOUT_S:g} s")
            return None
        if len(out) > MAX_TOOL_OUTPUT:
            raise InputError(f"{argv[0]} printed more than {MAX_TOOL_OUTPUT:,} bytes")
        if proc.returncode != 0:
            lines = err[:200].decode("utf-8", "replace").strip().splitlines()
            self.unread.append(f"{argv[0]}: exit code {proc.returncode}" + (f" ({lines[0]})" if lines else ""))
            return None
        return out.decode("utf-8", "replace")


def _bounded_output(proc: subprocess.Popen) -> tuple[bytes, bytes, bool]:
    """(stdout, stderr, timed out) of a running tool, reading at most MAX_TOOL_OUTPUT + 1 bytes of stdout and 4 KiB
    of stderr: a tool that prints without end is killed (with its session) once past the limit or TOOL_TIMEOUT_S,
    so memory stays bounded whatever it prints."""
    import selectors
    import time
    limits: dict[Any, int] = {proc.stdout: MAX_TOOL_OUTPUT + 1, proc.stderr: 4096}
    bufs: dict[Any, bytearray] = {proc.stdout: bytearray(), proc.stderr: bytearray()}
    sel = selectors.DefaultSelector()
    for f in bufs:
        sel.register(f, selectors.EVENT_READ)
    deadline = time.monotonic() + TOOL_TIMEOUT_S
    timed_out = over = False
    while sel.get_map():
        left = deadline - time.monotonic()
        if left <= 0:
            timed_out = True
            break
        for key, _ in sel.select(timeout=left):
            chunk = os.read(key.fd, 1 << 16)
            if not chunk:
                sel.unregister(key.fileobj)
                continue
            buf = bufs[key.fileobj]
            buf += chunk[:max(limits[key.fileobj] - len(buf), 0)]
            if key.fileobj is proc.stdout and len(buf) >= limits[proc.stdout]:
                over = True
        if over:
            break
    sel.close()
    if timed_out or over:
        try:
            os.killpg(proc.pid, signal.SIGKILL)  # the tool and whatever it started (its own session)
        except OSError:
            proc.kill()
    for f in bufs:
        f.close()
    try:
        proc.wait(timeout=TOOL_TIMEOUT_S)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()
    return bytes(bufs[proc.stdout]), bytes(bufs[proc.stderr]), timed_out


# ------------------------------------------------------------------------------------------ GPUs
def _int(s: Any, what: str = "a vendor tool") -> int | None:
    """An integer a tool printed, None when it printed none; InputError naming the tool when it is absurd (more
    than MAX_NUMBER_CHARS digits or above MAX_SIZE_BYTES): no real memory size, count or link width is."""
    t = str(s).strip() if s is not None else ""
    if len(t) > MAX_NUMBER_CHARS and t.lstrip("+-").isdigit():
        raise InputError(f"{what} printed a number of {len(t):,} digits: {clip_for_message(t, 40)}")
    try:
        v = int(t)
    except ValueError:
        return None
    return _in_range(v, what)


def _in_range(v: int, what: str) -> int:
    if not -MAX_SIZE_BYTES <= v <= MAX_SIZE_BYTES:
        raise InputError(f"{what} printed an out-of-range number: {clip_for_message(v, 40)}")
    return v


def _count_devices(n: int, tool: str) -> None:
    if n > MAX_DETECTED_DEVICES:
        raise InputError(f"{tool} reports {n:,} devices, more than the limit of {MAX_DETECTED_DEVICES}")


def _json(text: str, tool: str) -> Any:
    """A tool's JSON output, nesting and size checked before json.loads (whose recursion a deep document exhausts);
    None when it is not JSON."""
    depth, containers = json_shape(text, MAX_NESTING, 100 * MAX_DETECTED_DEVICES)
    if depth > MAX_NESTING:
        raise InputError(f"{tool} printed JSON nested deeper than {MAX_NESTING} levels")
    if containers > 100 * MAX_DETECTED_DEVICES:
        raise InputError(f"{tool} printed more than {100 * MAX_DETECTED_DEVICES:,} JSON objects/arrays")
    try:
        return json.loads(text)
    except ValueError:
        return None


def nvidia_gpus(text: str) -> list[Gpu]:
    out = []
    tool = "nvidia-smi"
    _count_devices(sum(1 for line in text.splitlines() if line.strip()), tool)
    for line in text.splitlines():
        f = [x.strip() for x in line.split(",")]
        if len(f) < 8 or _int(f[0], tool) is None:
            continue
        mib = _int(f[2], tool)
        out.append(Gpu(index=_int(f[0], tool) or 0, name=f[1][:MAX_NAME], source=tool,
                       memory_bytes=_in_range(mib * 2**20, tool) if mib is not None else None,
                       pcie_gen_max=_int(f[3], tool), pcie_width_max=_int(f[4], tool),
                       pcie_gen_current=_int(f[5], tool), pcie_width_current=_int(f[6], tool),
                       bus_id=f[7].lower()[:MAX_NAME] or None))
    return out


def _ci(d: dict[str, Any], *names: str) -> Any:
    low = {str(k).lower(): v for k, v in d.items()}
    for n in names:
        if n.lower() in low:
            return low[n.lower()]
    return None


def rocm_gpus(text: str) -> list[Gpu]:
    tool = "rocm-smi"
    data = _json(text, tool)
    if not isinstance(data, dict):
        return []
    cards = [k for k in data if re.fullmatch(r"card\d{1,6}", str(k))]
    _count_devices(len(cards), tool)
    out = []
    for card in sorted(cards, key=lambda k: int(k[4:])):
        v = data[card]
        if not isinstance(v, dict):
            continue
        name = _ci(v, "Card Series", "Card series", "Card SKU", "Card Model") or card
        out.append(Gpu(index=int(card[4:]), name=str(name)[:MAX_NAME], source=tool,
                       memory_bytes=_int(_ci(v, "VRAM Total Memory (B)"), tool)))
    return out


def apple(text: str) -> tuple[list[Gpu], Cpu, int | None]:
    """(the SoC as one unified-memory accelerator, the CPU, memory in GB as Apple states it)."""
    tool = "system_profiler"
    data = _json(text, tool)
    if not isinstance(data, dict):
        return [], Cpu(), None
    hws, disps = data.get("SPHardwareDataType") or [{}], data.get("SPDisplaysDataType") or [{}]
    hw = hws[0] if isinstance(hws, list) and hws and isinstance(hws[0], dict) else {}
    disp = disps[0] if isinstance(disps, list) and disps and isinstance(disps[0], dict) else {}
    chip = str(hw.get("chip_type") or disp.get("sppci_model") or "")[:MAX_NAME]
    m = re.match(r"(\d+)\s*GB", str(hw.get("physical_memory", "")))
    gb = _in_range(_int(m.group(1), tool) or 0, tool) if m else None
    if gb is not None and gb * 2**30 > MAX_SIZE_BYTES:
        raise InputError(f"{tool} printed an out-of-range memory size: {gb:,} GB")
    procs = re.match(r"proc (\d+)", str(hw.get("number_processors", "")))
    n_procs = _int(procs.group(1), tool) if procs else None
    cpu = Cpu(model=chip or None, sockets=1, cores=n_procs, threads=n_procs, source="system_profiler")
    if not chip:
        return [], cpu, gb
    key, why = match_apple(chip, gb)
    cores = _int(disp.get("sppci_cores"), tool)
    name = f"{chip} ({cores}-core GPU)" if cores else chip
    return [Gpu(index=0, name=name, source="system_profiler", memory_bytes=gb * 2**30 if gb else None,
                catalogue_key=key, match=why)], cpu, gb


def _gen(speed: str | None) -> int | None:
    m = re.match(r"\s*([\d.]+)\s*GT/s", speed or "")
    return GT_S_TO_GEN.get(m.group(1)) if m else None


def sysfs_gpus(p: Probe) -> list[dict[str, Any]]:
    """Display-class PCI functions: bus id, vendor, device id, PCIe link (and amdgpu's VRAM size)."""
    base = p.root / "sys/bus/pci/devices"
    try:
        devs = sorted(d.name for d in base.iterdir())
    except OSError:
        p.unread.append("/sys/bus/pci/devices: not readable")
        return []
    out = []
    for d in devs:
        rel = f"sys/bus/pci/devices/{d}"
        cls = (p.file(f"{rel}/class") or "").strip()
        if not cls.startswith("0x03"):
            continue
        out.append({"bus_id": d.lower(), "vendor": VENDORS.get((p.file(f"{rel}/vendor") or "").strip(), "other"),
                    "device": (p.file(f"{rel}/device") or "").strip(),
                    "gen_cur": _gen(p.file(f"{rel}/current_link_speed")),
                    "width_cur": _int(p.file(f"{rel}/current_link_width")),
                    "gen_max": _gen(p.file(f"{rel}/max_link_speed")),
                    "width_max": _int(p.file(f"{rel}/max_link_width")),
                    "vram": _int(p.file(f"{rel}/mem_info_vram_total"))})
    return out


def _bus(b: str | None) -> str | None:
    """nvidia-smi prints 00000000:01:00.0 (32-bit domain), sysfs 0000:01:00.0."""
    if not b:
        return None
    parts = b.lower().split(":")
    return f"{int(parts[0], 16):04x}:{parts[1]}:{parts[2]}" if len(parts) == 3 else b.lower()


# ------------------------------------------------------------------------------------------ CPU, DRAM, NVMe
def lscpu_cpu(text: str) -> Cpu:
    f = {}
    for line in text.splitlines():
        k, _, v = line.partition(":")
        f[k.strip()] = v.strip()
    sockets, per = _int(f.get("Socket(s)")), _int(f.get("Core(s) per socket"))
    tpc, n = _int(f.get("Thread(s) per core")), _int(f.get("CPU(s)"))
    cores = sockets * per if sockets and per else None
    return Cpu(model=f.get("Model name") or None, sockets=sockets, cores=cores,
               threads=n or (cores * tpc if cores and tpc else None), source="lscpu")


def cpuinfo_cpu(text: str) -> Cpu:
    blocks = [b for b in text.split("\n\n") if "processor" in b]
    model = next((ln.split(":", 1)[1].strip() for ln in text.splitlines() if ln.startswith("model name")), None)
    cores: set[tuple[str, str]] = set()
    sockets: set[str] = set()
    for b in blocks:
        kv = {k.strip(): v.strip() for k, _, v in (ln.partition(":") for ln in b.splitlines())}
        sockets.add(kv.get("physical id", "0"))
        cores.add((kv.get("physical id", "0"), kv.get("core id", kv.get("processor", "0"))))
    return Cpu(model=model, sockets=len(sockets) or None, cores=len(cores) or None, threads=len(blocks) or None,
               source="/proc/cpuinfo")


def meminfo_total(text: str) -> int | None:
    m = re.search(r"^MemTotal:\s+(\d+)\s*kB", text, re.M)
    return _in_range((_int(m.group(1), "/proc/meminfo") or 0) * 1024, "/proc/meminfo") if m else None


_SIZE_UNITS = {"kb": 2**10, "mb": 2**20, "gb": 2**30, "tb": 2**40}


def dmidecode_memory(text: str) -> dict[str, Any]:
    """Populated DIMMs of `dmidecode -t memory` (SMBIOS type 17 'Memory Device' blocks; sizes are binary units)."""
    dimms, ddr, speeds, channels = [], set(), [], set()
    for block in text.split("\n\n"):
        if "Memory Device" not in block:
            continue
        kv = {k.strip(): v.strip() for k, _, v in (ln.partition(":") for ln in block.splitlines()[1:])}
        m = re.match(r"(\d+)\s*([KMGT]B)", kv.get("Size", ""), re.I)
        if not m:
            continue  # "No Module Installed"
        dimms.append(_in_range((_int(m.group(1), "dmidecode") or 0) * _SIZE_UNITS[m.group(2).lower()], "dmidecode"))
        if kv.get("Type") not in (None, "", "Unknown", "Other"):
            ddr.add(kv["Type"])
        sp = re.match(r"(\d+)\s*MT/s", kv.get("Configured Memory Speed", kv.get("Speed", "")))
        if sp:
            speeds.append(_int(sp.group(1), "dmidecode") or 0)
        ch = re.search(r"CHANNEL\s*([A-Z0-9]+)", kv.get("Bank Locator", "") + " " + kv.get("Locator", ""), re.I)
        if ch:
            channels.add(ch.group(1).upper())
    if len(dimms) > 64 * MAX_DETECTED_DEVICES:
        raise InputError(f"dmidecode reports {len(dimms):,} memory devices, more than {64 * MAX_DETECTED_DEVICES:,}")
    return {"installed_bytes": _in_range(sum(dimms), "dmidecode") or None, "dimms": len(dimms) or None,
            "ddr": sorted(ddr)[0] if len(ddr) == 1 else None, "speed_mt_s": min(speeds) if speeds else None,
            "channels": len(channels) or None}


def nvme_drives(p: Probe) -> list[Nvme]:
    base = p.root / "sys/class/nvme"
    try:
        ctrls = sorted(d.name for d in base.iterdir() if re.fullmatch(r"nvme\d+", d.name))
    except OSError:
        p.unread.append("/sys/class/nvme: not readable (no NVMe controller, or not Linux)")
        return []
    out = []
    for c in ctrls:
        rel = f"sys/class/nvme/{c}"
        size = 0
        for ns in sorted((base / c).glob(f"{c}n*")):
            sectors = _int(p.file(f"{rel}/{ns.name}/size"))
            # sysfs block sizes are in 512-byte sectors whatever the LBA size
            size = _in_range(size + (sectors or 0) * 512, "sysfs")
        out.append(Nvme(name=c, model=(p.file(f"{rel}/model") or "").strip() or None, size_bytes=size or None,
                        pcie_gen=_gen(p.file(f"{rel}/device/current_link_speed")),
                        pcie_width=_int(p.file(f"{rel}/device/current_link_width"))))
    return out


# ------------------------------------------------------------------------------------------ the machine
def host_spec_string(cpu: Cpu, memory: Memory) -> tuple[str | None, list[str]]:
    """This machine as a `--host` spec (optimizer/catalog/host_spec.py comma form), and what it leaves unknown.

    cpu = the CPU model (lscpu / /proc/cpuinfo, without commas and "(R)"/"(TM)"), sockets, cores per socket (physical
    cores / sockets), channels = distinct "CHANNEL X" letters of dmidecode's populated DIMMs (per socket: a
    two-socket board repeats the letters per socket), mt = their configured speed, dram = the installed DIMMs
    (dmidecode) or, without it, MemTotal (below the installed size). A field that was not read is left out (the
    catalogue row of the CPU fills it in when `--host` resolves) and named in the list; a spec that does not
    resolve says why there too."""
    from optimizer.catalog.host_spec import parse_host
    unknown: list[str] = []
    if not cpu.model:
        return None, ["CPU model (neither lscpu nor /proc/cpuinfo was readable)"]
    model = re.sub(r"\((R|TM|r|tm)\)", "", cpu.model)
    model = re.sub(r"\s+", " ", model.replace(",", " ").replace("=", " ")).strip()
    parts = [f"cpu={model}"]
    if cpu.sockets:
        parts.append(f"sockets={cpu.sockets}")
        if cpu.cores and cpu.cores % cpu.sockets == 0:
            parts.append(f"cores={cpu.cores // cpu.sockets}")
    else:
        unknown.append("sockets")
    if not cpu.cores:
        unknown.append("cores per socket")
    if memory.channels:
        parts.append(f"channels={memory.channels}")
    else:
        unknown.append("populated memory channels (dmidecode, as root)")
    if memory.speed_mt_s:
        parts.append(f"mt={memory.speed_mt_s}")
    else:
        unknown.append("DIMM speed (dmidecode, as root)")
    dram = memory.installed_bytes or memory.total_bytes
    if dram:
        parts.append(f"dram={dram / 1e9:.1f}")
        if not memory.installed_bytes:
            unknown.append("installed DRAM (dram= is MemTotal, below the installed size)")
    else:
        unknown.append("DRAM size")
    spec = ",".join(parts)
    try:
        parse_host(spec).resolve()
    except InputError as e:
        unknown.append(f"the spec does not resolve: {e}")
    return spec, unknown


def inventory_string(gpus: list[Gpu], memory: Memory, unified: bool) -> str | None:
    """'1x rtx-4090, 1x rtx-3090, 128GiB ddr5': known accelerators in device order, then the host DRAM (installed
    DIMMs when dmidecode could read them, else MemTotal rounded down to a GiB). None when no accelerator is known."""
    parts: list[str] = []
    run_key, run_n = None, 0
    for g in sorted(gpus, key=lambda g: g.index):
        if g.catalogue_key is None:
            continue
        if g.catalogue_key == run_key:
            run_n += 1
            continue
        if run_key:
            parts.append(f"{run_n}x {run_key}")
        run_key, run_n = g.catalogue_key, 1
    if run_key:
        parts.append(f"{run_n}x {run_key}")
    if not parts:
        return None
    dram = memory.installed_bytes or memory.total_bytes
    if dram and not unified:
        kind = (memory.ddr or "").lower()
        parts.append(f"{dram // 2**30}GiB" + (f" {kind}" if kind in ("ddr4", "ddr5") else ""))
    return ", ".join(parts)


def detect(root: str | os.PathLike | None = None, path: str | None = None) -> Machine:
    p = Probe(root, path)
    gpus: list[Gpu] = []
    cpu = Cpu()
    apple_gb = None

    text = p.run(["nvidia-smi", f"--query-gpu={NVIDIA_QUERY}", "--format=csv,noheader,nounits"])
    if text is not None:
        gpus += nvidia_gpus(text)
    text = p.run(["rocm-smi", "--showproductname", "--showmeminfo", "vram", "--json"])
    if text is not None:
        gpus += [g.model_copy(update={"index": len(gpus) + g.index}) for g in rocm_gpus(text)]
    if (p.root / "System").exists() or shutil.which("system_profiler", path=p.path):
        text = p.run(["system_profiler", "SPDisplaysDataType", "SPHardwareDataType", "-json"])
        if text is not None:
            ag, cpu, apple_gb = apple(text)
            gpus += ag

    # sysfs: the PCIe link of the cards above (matched by bus id), and cards no vendor tool reported
    seen = {_bus(g.bus_id) for g in gpus if g.bus_id}
    by_bus = {d["bus_id"]: d for d in sysfs_gpus(p)}
    linked = []
    for g in gpus:
        d = by_bus.get(_bus(g.bus_id) or "")
        if d is not None:
            g = g.model_copy(update={"pcie_gen_current": g.pcie_gen_current or d["gen_cur"],
                                     "pcie_width_current": g.pcie_width_current or d["width_cur"],
                                     "pcie_gen_max": g.pcie_gen_max or d["gen_max"],
                                     "pcie_width_max": g.pcie_width_max or d["width_max"]})
        linked.append(g)
    gpus = linked
    vendor_tools = {"nvidia": "nvidia-smi", "amd": "rocm-smi"}
    for bus, d in sorted(by_bus.items()):
        if bus in seen or (d["vendor"] == "amd" and any(g.source == "rocm-smi" for g in gpus)):
            continue
        tool = vendor_tools.get(d["vendor"])
        gpus.append(Gpu(index=len(gpus), name=f"PCI {d['vendor']} device {d['device']}", source="sysfs",
                        memory_bytes=d["vram"], pcie_gen_max=d["gen_max"], pcie_width_max=d["width_max"],
                        pcie_gen_current=d["gen_cur"], pcie_width_current=d["width_cur"], bus_id=bus,
                        match=f"display device without a name ({tool} did not report it)" if tool else
                        "display device without a vendor tool: not identified"))

    final = []
    for g in gpus:
        if g.source != "system_profiler" and g.source != "sysfs":
            key, why = match_gpu(g.name, g.memory_bytes)
            g = g.model_copy(update={"catalogue_key": key, "match": why})
        final.append(g)
    gpus = final

    # CPU
    if cpu.model is None:
        text = p.run(["lscpu"])
        cpu = lscpu_cpu(text) if text else Cpu()
        if cpu.model is None:
            info = p.file("proc/cpuinfo")
            if info:
                cpu = cpuinfo_cpu(info)
            else:
                p.unread.append("/proc/cpuinfo: not readable")
    # DRAM
    mem_total = None
    info = p.file("proc/meminfo")
    if info:
        mem_total = meminfo_total(info)
    elif apple_gb is None:
        p.unread.append("/proc/meminfo: not readable")
    if apple_gb is not None:
        mem_total = apple_gb * 2**30
    dmi = p.run(["dmidecode", "-t", "memory"]) if apple_gb is None else None
    d = dmidecode_memory(dmi) if dmi else {}
    if dmi is not None and not d.get("dimms"):
        p.unread.append("dmidecode: no populated memory device in its output (run as root for DIMM details)")
    memory = Memory(total_bytes=mem_total, source="+".join(s for s, ok in (("/proc/meminfo", info), ("dmidecode", d))
                                                             if ok) or ("system_profiler" if apple_gb else ""),
                    **{k: v for k, v in d.items() if v is not None})
    nvme = nvme_drives(p) if apple_gb is None else []

    if not gpus:
        p.unread.append("no GPU or accelerator found (no vendor tool answered and sysfs lists no display device)")
    unknown = [f"{g.name}: {g.match}" for g in gpus if g.catalogue_key is None]
    host, host_unknown = host_spec_string(cpu, memory) if apple_gb is None else (None, [])
    return Machine(gpus=gpus, cpu=cpu, memory=memory, nvme=nvme,
                   inventory=inventory_string(gpus, memory, unified=apple_gb is not None), unknown=unknown,
                   unread=p.unread, host=host, host_unknown=host_unknown)
