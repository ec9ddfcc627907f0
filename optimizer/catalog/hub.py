"""Hugging Face Hub ids as MODEL: `org/name` or `org/name@revision`, read without downloading weights.

Only these files are fetched, through `huggingface_hub` (its cache, HF_TOKEN, HF_ENDPOINT and HF_HUB_CACHE/HF_HOME,
read when the call is made):
- `config.json` (required), `model.safetensors.index.json` and `hf_quant_config.json` when the repository lists them
  (`/api/models/{repo}/revision/{rev}`), each refused before download when its size (HEAD) is above the limits of
  optimizer/limits.py, and read with the same bounded JSON reader as a local file;
- the JSON header of every safetensors shard the index names (or of `model.safetensors` when there is no index),
  by HTTP range request (`HfApi.parse_safetensors_file_metadata`: the first 100 kB, then the rest of the header if
  it is longer), never the tensor data. The headers give each tensor's exact dtype and bytes.

The headers are not files of the repository, so the Hub cache cannot hold them: rigopt keeps them, with the list
of files it fetched, in `models--{org}--{name}/.rigopt/{commit}.json` inside the repository's cache folder (beside
huggingface_hub's own `.no_exist/`; `hf cache delete` removes it with the repository). Offline
(`--offline` or HF_HUB_OFFLINE=1) every file comes from the cache (`local_files_only`) and a model that was never
fetched is one error line; the answer is the same as online for the same commit.

Every failure (no network, 401/403 gated or private repository, 404, a malformed or oversized file) is one
RigoptError; the CLI prints it as one `error:` line with exit code 2.
"""

from __future__ import annotations

import json
import os
import re
import signal
import tempfile
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from optimizer.arch.from_config import spec_from_config
from optimizer.arch.from_safetensors import check_header, index_total_size, tensors_from_headers
from optimizer.arch.hf_quant import storage_from_hf
from optimizer.arch.spec import ModelSpec
from optimizer.arch.weights_file import WeightsFile
from optimizer.errors import CatalogError, InputError, ModelFormatError, RigoptError
from optimizer.limits import (
    HUB_TIMEOUT_S,
    MAX_CONFIG_BYTES,
    MAX_HUB_TOTAL_S,
    MAX_INDEX_BYTES,
    MAX_SAFETENSORS_SHARDS,
    clip_for_message,
    read_json_bounded,
    safe_component,
)

DEFAULT_ENDPOINT = "https://huggingface.co"
MANIFEST_SCHEMA = "rigopt.hub-snapshot/1"
CONFIG, INDEX, QUANT, SINGLE = ("config.json", "model.safetensors.index.json", "hf_quant_config.json",
                                "model.safetensors")
_LIMITS = {CONFIG: MAX_CONFIG_BYTES, INDEX: MAX_INDEX_BYTES, QUANT: MAX_CONFIG_BYTES}

# Hub repository names: letters, digits, '-', '_', '.', at most 96 characters each side, no '--' or '..'
# (huggingface_hub.utils.validate_repo_id). A revision is a branch, tag, commit or refs/pr/N.
_HUB_ID = re.compile(r"(?P<repo>[A-Za-z0-9][A-Za-z0-9_.-]{0,95}/[A-Za-z0-9_][A-Za-z0-9_.-]{0,95})"
                     r"(?:@(?P<rev>[A-Za-z0-9_][A-Za-z0-9_./-]{0,199}))?")


@dataclass(frozen=True)
class HubModel:
    """What the Hub files say about a model: its architecture, its weights table and its storage formats."""
    repo: str
    revision: str
    commit: str
    spec: ModelSpec
    weights_file: WeightsFile | None
    storage: tuple[tuple[str, str], ...]


def parse_hub_id(name: str) -> tuple[str, str | None] | None:
    """(repo, revision or None) when `name` has the shape of a Hub id, None otherwise (a path, a catalogue name)."""
    m = _HUB_ID.fullmatch(name)
    if m is None:
        return None
    repo, rev = m.group("repo"), m.group("rev")
    if ".." in name or "--" in repo or repo.endswith((".json", ".gguf", ".")) or (rev and rev.endswith("/")):
        return None
    return repo, rev


def offline() -> bool:
    """True when the network is forbidden: HF_HUB_OFFLINE (set by `rigopt --offline` too) is 1/true/yes/on."""
    return os.environ.get("HF_HUB_OFFLINE", "").strip().lower() in ("1", "true", "yes", "on")


def endpoint() -> str:
    return (os.environ.get("HF_ENDPOINT") or DEFAULT_ENDPOINT).rstrip("/")


def cache_dir() -> Path:
    """huggingface_hub's cache folder, resolved as it does (HF_HUB_CACHE, HF_HOME/hub, XDG_CACHE_HOME, ~/.cache)."""
    if os.environ.get("HF_HUB_CACHE"):
        return Path(os.environ["HF_HUB_CACHE"]).expanduser()
    if os.environ.get("HF_HOME"):
        return Path(os.environ["HF_HOME"]).expanduser() / "hub"
    xdg = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(xdg).expanduser() / "huggingface" / "hub"


def _token() -> str | None:
    return os.environ.get("HF_TOKEN") or None


def _label(repo: str, rev: str | None) -> str:
    return clip_for_message(f"{repo}@{rev}" if rev else repo)


def _as_error(e: BaseException, repo: str, rev: str | None, what: str) -> RigoptError:
    """One clear message for whatever huggingface_hub or the HTTP layer raised."""
    from huggingface_hub import errors as he
    name = _label(repo, rev)
    status = getattr(getattr(e, "response", None), "status_code", None)
    code = f"HTTP {status}" if status else type(e).__name__
    if isinstance(e, RigoptError):
        return e
    if isinstance(e, he.GatedRepoError):
        return CatalogError(f"{name}: gated repository ({code}): accept its licence on the Hub and set HF_TOKEN")
    if isinstance(e, he.RepositoryNotFoundError):
        return CatalogError(f"{name}: no such model at {clip_for_message(endpoint(), 60)} ({code}; private "
                            "repositories need HF_TOKEN), and no catalogue name or local path of that name")
    if isinstance(e, he.RevisionNotFoundError):
        return CatalogError(f"{name}: no such revision on the Hub ({code})")
    if isinstance(e, (he.OfflineModeIsEnabled, he.LocalEntryNotFoundError)):
        if offline():
            where = clip_for_message(str(cache_dir()))
            return CatalogError(f"{name}: {what} is not in the Hugging Face cache ({where}) and --offline / "
                                "HF_HUB_OFFLINE=1 forbids the network")
        return CatalogError(f"{name}: cannot reach the Hub at {clip_for_message(endpoint(), 60)} for {what} and it is "
                            "not in the local cache")
    if isinstance(e, (he.EntryNotFoundError, he.RemoteEntryNotFoundError)):
        return CatalogError(f"{name}: the Hub has no {what} ({code})")
    if isinstance(e, he.SafetensorsParsingError):
        return ModelFormatError(f"{name}: {what}: malformed safetensors header")
    if isinstance(e, he.HfHubHTTPError):
        if status in (401, 403):
            return CatalogError(f"{name}: access refused ({code}): set HF_TOKEN to a token that may read it")
        return CatalogError(f"{name}: the Hub answered {code} for {what}")
    if isinstance(e, OSError) or type(e).__name__ in _NETWORK_ERRORS:
        return CatalogError(f"{name}: cannot reach the Hub at {clip_for_message(endpoint(), 60)} for {what} "
                            f"({type(e).__name__})")
    return CatalogError(f"{name}: the Hub at {clip_for_message(endpoint(), 60)} sent a malformed answer for {what} "
                        f"({type(e).__name__}: {clip_for_message(str(e).splitlines()[0] if str(e) else '', 80)})")


# httpx's transport failures (httpx2 in huggingface_hub 2.x): the network, not the answer, failed
_NETWORK_ERRORS = {"ConnectError", "ConnectTimeout", "ReadTimeout", "WriteTimeout", "PoolTimeout", "TimeoutException",
                   "NetworkError", "ReadError", "WriteError", "CloseError", "ProxyError"}


class _HubStop(BaseException):  # noqa: N818 - BaseException so huggingface_hub's retry/wrap handlers let it through
    """A request refused by rigopt's guard (another host, offline) or cut off by the total deadline."""


# Hosts a request may go to besides the endpoint's own: the official Hub's file CDNs (LFS and Xet storage answer
# /resolve/ of large files with a redirect there). A custom HF_ENDPOINT (a mirror, a test server) gets no others.
_HUB_HOSTS = ("huggingface.co", "hf.co")


def _origin(scheme: str, host: str, port: int | None) -> tuple[str, str, int]:
    return scheme, host.lower().rstrip("."), port or {"http": 80, "https": 443}.get(scheme, 0)


def _allowed_origin(origin: tuple[str, str, int], ep: tuple[str, str, int]) -> bool:
    """The endpoint's own origin (scheme, host, port); for the official Hub also its https CDN subdomains."""
    if origin == ep:
        return True
    scheme, host, port = origin
    return ep[1] in _HUB_HOSTS and scheme == "https" and port == 443 and any(
        host == h or host.endswith("." + h) for h in _HUB_HOSTS)


def _guard(request: Any) -> None:
    """httpx request hook: no request when offline, none to a host other than the endpoint's (redirects included),
    none after the total deadline."""
    if offline():
        raise _HubStop("--offline / HF_HUB_OFFLINE=1 forbids the network")
    from urllib.parse import urlsplit
    ep = urlsplit(endpoint())
    try:
        ep_origin = _origin(ep.scheme, ep.hostname or "", ep.port)
    except ValueError:
        raise _HubStop("HF_ENDPOINT is not a usable URL") from None
    url = request.url
    origin = _origin(str(url.scheme), str(url.host or ""), url.port)
    if not _allowed_origin(origin, ep_origin):
        raise _HubStop(f"refused a request to another host ({clip_for_message(f'{origin[1]}:{origin[2]}', 60)}), "
                       "not the Hub endpoint")
    if _DEADLINE[0] is not None and time.monotonic() > _DEADLINE[0]:
        raise _HubStop(f"no complete answer within {MAX_HUB_TOTAL_S:g} s")


_DEADLINE: list[float | None] = [None]
_GUARD_INSTALLED = [False]


def _install_guard(hf: Any) -> None:
    """Every request huggingface_hub makes goes through its shared httpx client: add the guard hook to it."""
    if _GUARD_INSTALLED[0]:
        return
    from huggingface_hub.utils import _http

    def factory() -> Any:
        client = _http.default_client_factory()
        hooks = client.event_hooks
        client.event_hooks = {**hooks, "request": [*hooks.get("request", []), _guard]}
        return client

    hf.set_client_factory(factory)
    _GUARD_INSTALLED[0] = True


class _Deadline:
    """MAX_HUB_TOTAL_S for one Hub call, all requests and reads included: the per-read timeout alone lets a server
    that trickles a byte every few seconds hold a request open for ever. SIGALRM in the main thread (where the
    CLI runs); elsewhere only the request hook's check between requests applies."""

    def __enter__(self) -> _Deadline:
        _DEADLINE[0] = time.monotonic() + MAX_HUB_TOTAL_S
        self.armed = threading.current_thread() is threading.main_thread() and hasattr(signal, "setitimer")
        if self.armed:
            def expire(_signum: int, _frame: Any) -> None:
                raise _HubStop(f"no complete answer within {MAX_HUB_TOTAL_S:g} s")
            self.old = signal.signal(signal.SIGALRM, expire)
            signal.setitimer(signal.ITIMER_REAL, MAX_HUB_TOTAL_S)
        return self

    def __exit__(self, *exc: Any) -> None:
        _DEADLINE[0] = None
        if self.armed:
            signal.setitimer(signal.ITIMER_REAL, 0)
            signal.signal(signal.SIGALRM, self.old)


class _Hub:
    """One repository at one revision, fetched through huggingface_hub."""

    def __init__(self, repo: str, rev: str | None):
        try:
            import huggingface_hub
        except ImportError:
            raise InputError(f"{_label(repo, rev)}: reading a Hugging Face id needs the huggingface_hub package "
                             "(pip install huggingface_hub), or give a catalogue name or a local path") from None
        from huggingface_hub import constants
        from huggingface_hub.utils import disable_progress_bars
        disable_progress_bars()
        # No requests beyond the model's files: the user-agent's telemetry part fetches an "agent harness" registry
        # from the endpoint (huggingface_hub utils/_headers.py build_hf_headers -> detect_agent); turn it off.
        constants.HF_HUB_DISABLE_TELEMETRY = True
        _install_guard(huggingface_hub)
        self.hf = huggingface_hub
        self.repo, self.rev = repo, rev
        self.revision = rev or "main"
        self.offline = offline()
        self.ep, self.cache, self.token = endpoint(), cache_dir(), _token()

    def call(self, what: str, fn: Any, *args: Any, **kwargs: Any) -> Any:
        try:
            with _Deadline():
                return fn(*args, **kwargs)
        except _HubStop as e:
            raise CatalogError(f"{_label(self.repo, self.rev)}: {what}: {e}") from None
        except Exception as e:  # the network boundary: every failure becomes one error line
            raise _as_error(e, self.repo, self.rev, what) from None

    def download(self, filename: str, revision: str) -> Path:
        """One repository file into the Hub cache (its size checked first), or from the cache when offline."""
        hf = self.hf
        limit = _LIMITS[filename]
        if not self.offline:
            url = hf.hf_hub_url(self.repo, filename, revision=revision, endpoint=self.ep)
            meta = self.call(filename, hf.get_hf_file_metadata, url, token=self.token, timeout=HUB_TIMEOUT_S,
                             endpoint=self.ep)
            if meta.size is not None and meta.size > limit:
                raise ModelFormatError(f"{_label(self.repo, self.rev)}: {filename} is {meta.size:,} bytes, larger "
                                       f"than the {limit:,}-byte limit")
        path = self.call(filename, hf.hf_hub_download, self.repo, filename, revision=revision,
                         cache_dir=str(self.cache), endpoint=self.ep, token=self.token, etag_timeout=HUB_TIMEOUT_S,
                         local_files_only=self.offline)
        return Path(path)

    def read_json(self, path: Path, filename: str) -> Any:
        return read_json_bounded(path, _LIMITS[filename], filename, f"{_label(self.repo, self.rev)}: {filename}",
                                 ModelFormatError)

    def manifest_path(self, commit: str) -> Path:
        folder = "models--" + self.repo.replace("/", "--")
        return self.cache / folder / ".rigopt" / f"{safe_component(commit)}.json"

    def header(self, shard: str, commit: str) -> dict[str, dict[str, Any]]:
        api = self.hf.HfApi(endpoint=self.ep, token=self.token)
        meta = self.call(f"header of {clip_for_message(shard, 60)}", api.parse_safetensors_file_metadata,
                         self.repo, shard, revision=commit, timeout=HUB_TIMEOUT_S)
        raw = {n: {"dtype": t.dtype, "shape": list(t.shape), "data_offsets": list(t.data_offsets)}
               for n, t in sorted(meta.tensors.items())}
        return check_header(raw, f"{_label(self.repo, self.rev)}: {shard}", None)

    def fetch(self) -> tuple[str, dict[str, Path], dict[str, dict[str, dict[str, Any]]]]:
        """(commit, {file: cached path}, {shard: header}) online, saving the manifest; from the cache offline."""
        if self.offline:
            cfg = self.download(CONFIG, self.revision)
            commit = cfg.parent.name
            mp = self.manifest_path(commit)
            if not mp.is_file():
                raise CatalogError(f"{_label(self.repo, self.rev)}: the cache holds config.json but not the "
                                   "safetensors headers rigopt reads; run once without --offline")
            man = read_json_bounded(mp, MAX_INDEX_BYTES, "hub manifest", clip_for_message(str(mp)), ModelFormatError)
            if not (isinstance(man, dict) and man.get("schema") == MANIFEST_SCHEMA
                    and isinstance(man.get("files"), list) and isinstance(man.get("headers"), dict)):
                raise ModelFormatError(f"{clip_for_message(str(mp))}: not a {MANIFEST_SCHEMA} file; delete it and "
                                       "run once without --offline")
            files = {CONFIG: cfg}
            for f in man["files"]:
                if f in (INDEX, QUANT):
                    files[f] = self.download(f, commit)
            headers = {str(s): check_header(h, str(s), None) for s, h in man["headers"].items()
                       if isinstance(h, dict)}
            return commit, files, headers

        api = self.hf.HfApi(endpoint=self.ep, token=self.token)
        info = self.call("repository listing", api.model_info, self.repo, revision=self.revision,
                         timeout=HUB_TIMEOUT_S)
        names = {s.rfilename for s in (info.siblings or [])}
        if CONFIG not in names:
            raise CatalogError(f"{_label(self.repo, self.rev)}: the repository has no config.json (rigopt reads "
                               "transformers-style checkpoints; for a GGUF file give its local path)")
        cfg = self.download(CONFIG, self.revision)      # by revision, so refs/<revision> is cached for --offline
        commit = cfg.parent.name
        files = {CONFIG: cfg}
        for f in (INDEX, QUANT):
            if f in names:
                files[f] = self.download(f, commit)
        shards = self.shards(files, names)
        headers = {s: self.header(s, commit) for s in shards}
        self.save_manifest(commit, sorted(files), headers)
        return commit, files, headers

    def shards(self, files: dict[str, Path], names: set[str]) -> list[str]:
        if INDEX not in files:
            return [SINGLE] if SINGLE in names else []
        index = self.read_json(files[INDEX], INDEX)
        wm = index.get("weight_map") if isinstance(index, dict) else None
        if not isinstance(wm, dict):
            raise ModelFormatError(f"{_label(self.repo, self.rev)}: {INDEX} has no 'weight_map' object")
        shards = sorted({str(v) for v in wm.values()})
        if len(shards) > MAX_SAFETENSORS_SHARDS:
            raise ModelFormatError(f"{_label(self.repo, self.rev)}: {INDEX} names {len(shards):,} shards (limit "
                                   f"{MAX_SAFETENSORS_SHARDS:,})")
        bad = [s for s in shards if safe_component(s, "") != s or s not in names]
        if bad:
            raise ModelFormatError(f"{_label(self.repo, self.rev)}: {INDEX} names shard {clip_for_message(bad[0])}, "
                                   "which is not a file of the repository")
        return shards

    def save_manifest(self, commit: str, files: list[str], headers: dict[str, dict[str, dict[str, Any]]]) -> None:
        mp = self.manifest_path(commit)
        body = json.dumps({"schema": MANIFEST_SCHEMA, "repo": self.repo, "commit": commit, "files": files,
                           "headers": headers}, sort_keys=True, separators=(",", ":"))
        try:
            mp.parent.mkdir(parents=True, exist_ok=True)
            with tempfile.NamedTemporaryFile("w", dir=mp.parent, suffix=".tmp", delete=False) as f:
                f.write(body)
            os.replace(f.name, mp)
        except OSError as e:
            raise InputError(f"cannot write {clip_for_message(str(mp))} in the Hugging Face cache "
                             f"({e.strerror or type(e).__name__})") from None


def hub_model(repo: str, rev: str | None) -> HubModel:
    """Fetch (or read from the cache) a Hub model's config, index, quantization config and safetensors headers."""
    h = _Hub(repo, rev)
    commit, files, headers = h.fetch()
    config = h.read_json(files[CONFIG], CONFIG)
    if not isinstance(config, dict):
        raise ModelFormatError(f"{_label(repo, rev)}: config.json is not a JSON object")
    hfq = h.read_json(files[QUANT], QUANT) if QUANT in files else None
    index = h.read_json(files[INDEX], INDEX) if INDEX in files else None
    where = f"hf:{repo}@{commit}"
    spec = spec_from_config(config, name=repo, source=f"{where}/config.json")
    storage = storage_from_hf(config, hfq)
    total = index_total_size(index, f"{_label(repo, rev)}: {INDEX}")
    wf: WeightsFile | None = None
    if headers:
        tensors = tensors_from_headers(headers, len(spec.main_layers))
        wf = WeightsFile(path=where, spec=spec, tensors=tensors, file_bytes=total or sum(t.n_bytes for t in tensors),
                         format="safetensors")
    elif total:
        wf = WeightsFile(path=where, spec=spec, tensors=(), file_bytes=total, format="safetensors")
    return HubModel(repo=repo, revision=h.revision, commit=commit, spec=spec, weights_file=wf,
                    storage=tuple(sorted(storage.items())))
