"""Where pretrained weights come from: a local file, the Hugging Face cache, or the hub when it answers.

``pretrained=True`` looks, in order, at

1. the Hugging Face cache (``$HF_HUB_CACHE``, else ``$HF_HOME/hub``, else ``~/.cache/huggingface/hub``, read
   when the model is built, not at import): works offline;
2. the hub, when ``HF_HUB_OFFLINE`` is not set and a connection opens within a few seconds: the file is
   downloaded into that cache;
3. otherwise it fails within seconds with the command that fetches the file elsewhere.

``pretrained="path/to/file.safetensors"`` (or ``.pth``) loads that file. Nothing here changes the environment:
importing the package leaves ``os.environ`` as the user set it.
"""

from __future__ import annotations

import os
import socket
import threading
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

HUB_FILES = ("model.safetensors", "pytorch_model.bin")  # what timm publishes, in the order timm prefers them
PROBE_TIMEOUT_S = 3.0
_TRUE = ("1", "true", "yes", "on")


class PretrainedUnavailableError(RuntimeError):
    """``pretrained=True`` but the weights are neither in the Hugging Face cache nor reachable on the hub."""


def hub_repo(backbone: str) -> tuple[str, tuple[str, ...]]:
    """The hub repository of a timm model name and the file names to look for there.

    Uses timm's pretrained config (``hf_hub_id``), so ``"resnet10t"`` resolves to its default tag
    (``timm/resnet10t.c3_in1k``).
    """
    if backbone.startswith("hf-hub:"):
        return backbone[len("hf-hub:") :], HUB_FILES
    from timm.models import get_pretrained_cfg

    cfg = get_pretrained_cfg(backbone)
    repo = getattr(cfg, "hf_hub_id", None) or (backbone if "/" in backbone else f"timm/{backbone}")
    name = getattr(cfg, "hf_hub_filename", None)
    return repo, ((name,) if name else HUB_FILES)


def hub_cache_dir() -> Path:
    """The Hugging Face hub cache as the environment names it now (``huggingface_hub`` reads it at import)."""
    if os.environ.get("HF_HUB_CACHE"):
        return Path(os.environ["HF_HUB_CACHE"]).expanduser()
    home = os.environ.get("HF_HOME") or os.path.join(os.environ.get("XDG_CACHE_HOME", "~/.cache"), "huggingface")
    return Path(home).expanduser() / "hub"


def cached_weights(backbone: str) -> Path | None:
    """The weights file of ``backbone`` in the Hugging Face cache, or ``None`` (never touches the network)."""
    from huggingface_hub import try_to_load_from_cache

    repo, files = hub_repo(backbone)
    for name in files:
        found = try_to_load_from_cache(repo, name, cache_dir=str(hub_cache_dir()))
        if isinstance(found, str):  # the other answers are None and a "known to be missing" marker
            return Path(found)
    return None


def hub_offline() -> bool:
    """Whether the user switched the hub off (``HF_HUB_OFFLINE``)."""
    return os.environ.get("HF_HUB_OFFLINE", "").strip().lower() in _TRUE


def hub_reachable(timeout: float = PROBE_TIMEOUT_S) -> bool:
    """Whether a TCP connection to the hub (``HF_ENDPOINT``, default huggingface.co) opens within ``timeout``."""
    url = urlparse(os.environ.get("HF_ENDPOINT") or "https://huggingface.co")
    port = url.port or (80 if url.scheme == "http" else 443)
    answered: list[bool] = []

    def probe() -> None:
        try:
            with socket.create_connection((url.hostname or "huggingface.co", port), timeout=timeout):
                answered.append(True)
        except OSError:
            pass

    # The name lookup is not bound by the socket timeout (an unreachable DNS server can block it for tens of
    # seconds), so the probe runs in a daemon thread and is abandoned when it has not answered in time.
    thread = threading.Thread(target=probe, name="hub-probe", daemon=True)
    thread.start()
    thread.join(timeout + 0.5)
    return bool(answered)


def download_weights(backbone: str) -> Path:
    """Download the weights of ``backbone`` into :func:`hub_cache_dir` and return the file."""
    from huggingface_hub import hf_hub_download
    from huggingface_hub.utils import EntryNotFoundError

    repo, files = hub_repo(backbone)
    for name in files[:-1]:
        try:
            return Path(hf_hub_download(repo, name, cache_dir=str(hub_cache_dir()), etag_timeout=PROBE_TIMEOUT_S))
        except EntryNotFoundError:
            continue  # older repositories publish only pytorch_model.bin
    return Path(hf_hub_download(repo, files[-1], cache_dir=str(hub_cache_dir()), etag_timeout=PROBE_TIMEOUT_S))


def how_to_get(backbone: str, reason: str) -> str:
    """The error message: why the weights are unavailable and the commands that fix it."""
    repo, files = hub_repo(backbone)
    return (
        f"pretrained=True needs {repo}/{files[0]}: {reason}. It is not in the Hugging Face cache "
        f"({hub_cache_dir()}). On a machine with network run `hf download {repo} {files[0]}` (older "
        f"huggingface_hub: `huggingface-cli download {repo} {files[0]}`) and copy its cache folder "
        f"models--{repo.replace('/', '--')} into {hub_cache_dir()} (or point HF_HUB_CACHE at it); or add "
        f"`--local-dir weights/` and pass pretrained='weights/{files[0]}' (any local .safetensors or .pth file)."
    )


def resolve_pretrained(backbone: str, pretrained: bool | str | Path) -> dict[str, Any]:
    """The ``timm.create_model`` arguments that load ``backbone``'s pretrained weights, or none.

    Args:
        backbone: timm model name.
        pretrained: ``False``, ``True`` (cache, then hub, see the module docstring) or a local file.

    Returns:
        ``{}`` for ``False``; else ``{"pretrained": True, "pretrained_cfg_overlay": {"file": path}}``.

    Raises:
        FileNotFoundError: A path that is not a file.
        PretrainedUnavailableError: ``True``, nothing cached and the hub off or unreachable (within seconds).
    """
    if pretrained is False or pretrained is None or (isinstance(pretrained, (str, Path)) and not str(pretrained)):
        return {}
    if pretrained is True:
        path = cached_weights(backbone)
        if path is None:
            if hub_offline():
                raise PretrainedUnavailableError(how_to_get(backbone, "HF_HUB_OFFLINE is set"))
            if not hub_reachable():
                raise PretrainedUnavailableError(
                    how_to_get(backbone, f"the hub did not answer within {PROBE_TIMEOUT_S:g} s")
                )
            try:
                path = download_weights(backbone)
            except Exception as err:  # the hub client raises its own error types (HTTP, offline, timeouts)
                raise PretrainedUnavailableError(
                    how_to_get(backbone, f"the download failed ({type(err).__name__}: {err})")
                ) from err
    else:
        path = Path(pretrained).expanduser()
        if not path.is_file():
            raise FileNotFoundError(f"pretrained weights file not found: {path} (expected a .pth or .safetensors)")
    return {"pretrained": True, "pretrained_cfg_overlay": {"file": str(path)}}
