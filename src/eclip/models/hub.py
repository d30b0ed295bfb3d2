"""Pretrained open_clip weights: the local cache first, and one line at once when the hub cannot be reached.

Why: open_clip fetches a tag's weights (and an `hf-hub:` model's config) through huggingface_hub,
which retries a refused connection five times per file with back-off, logging each retry. On a
machine without network, `ViT-B-16` with tag `openai` spent 60 s in 20 retries before an error
that never said "offline" nor what to do. Here every file a load will fetch is looked up in the
local caches first (huggingface_hub's, and `~/.cache/clip` for the tags open_clip downloads by
URL), without touching the network:

- all cached: the load runs with huggingface_hub's offline switch on (what `HF_HUB_OFFLINE=1`
  sets), so it reads the cache and nothing waits on the network;
- something missing and `HF_HUB_OFFLINE` set: one line saying so, at once;
- something missing: the server is asked once, with a short timeout; unreachable, one line naming
  what to do (a local checkpoint file, a local Hugging Face CLIP folder, or the cache filled on a
  machine online and `HF_HUB_OFFLINE=1`); reachable, open_clip downloads as usual.
"""
from __future__ import annotations

import json
import os
import urllib.error
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit

from eclip.errors import ModelLoadError

#: Seconds to wait for the server before calling it unreachable (a refused connection answers at once).
PROBE_TIMEOUT = 5.0

_WEIGHTS, _SAFE_WEIGHTS, _CONFIG = "open_clip_pytorch_model.bin", "open_clip_model.safetensors", "open_clip_config.json"


@dataclass(frozen=True)
class HubFile:
    """A file a load will fetch: from a hub repository (any one of `names` will do), or from a URL."""

    repo: str | None
    names: tuple[str, ...] = ()
    url: str | None = None

    def __str__(self) -> str:
        return self.url or f"{self.repo}/{self.names[0]}"

    def cached(self) -> str | None:
        """The local copy's path, or None; reads the caches only."""
        if self.url:
            path = Path("~/.cache/clip").expanduser() / os.path.basename(self.url)  # where open_clip keeps URL downloads
            return str(path) if path.is_file() else None
        from huggingface_hub import try_to_load_from_cache

        for name in self.names:
            found = try_to_load_from_cache(self.repo, name)
            if isinstance(found, str):
                return found
        return None

    def server(self) -> str:
        """The URL whose server answers for this file."""
        from huggingface_hub import constants

        return self.url or constants.ENDPOINT


def _weights(repo_and_file: str) -> HubFile:
    """open_clip's `hf_hub` entry "org/repo/" (its default file) or "org/repo/file.bin", with the safetensors twin it tries first."""
    repo, name = repo_and_file.rstrip("/"), _WEIGHTS
    if not repo_and_file.endswith("/"):
        repo, name = os.path.split(repo_and_file)
    twin = _SAFE_WEIGHTS if name == _WEIGHTS else (name[:-4] + ".safetensors" if name.endswith((".bin", ".pth")) else None)
    return HubFile(repo, (twin, name) if twin else (name,))


def _text_tower(model_cfg: dict) -> list[HubFile]:
    """The Hugging Face tokenizer and text model a config names (multilingual CLIPs), fetched by transformers."""
    text = model_cfg.get("text_cfg") or {}
    files = [HubFile(text["hf_tokenizer_name"], ("tokenizer_config.json",))] if text.get("hf_tokenizer_name") else []
    if text.get("hf_model_name"):
        files.append(HubFile(text["hf_model_name"], ("config.json",)))
    return files


def files_needed(name: str, pretrained: str | None) -> list[HubFile]:
    """Every file `open_clip.create_model_and_transforms(name, pretrained)` and its tokenizer will fetch, from the caches' view."""
    import open_clip

    if name.startswith("hf-hub:"):
        repo = name.removeprefix("hf-hub:")
        config = HubFile(repo, (_CONFIG,))
        files = [config, _weights(repo + "/")]
        local = config.cached()
        if local:
            try:
                files += _text_tower(json.loads(Path(local).read_text(encoding="utf-8")).get("model_cfg") or {})
            except (OSError, ValueError, AttributeError):
                pass  # open_clip reports a broken config itself
        return files
    name = name.replace("/", "-")  # open_clip reads "ViT-B/16" as ViT-B-16
    files = _text_tower(open_clip.get_model_config(name) or {})
    cfg = open_clip.get_pretrained_cfg(name, pretrained) if pretrained else {}
    if cfg.get("hf_hub"):
        files.insert(0, _weights(cfg["hf_hub"]))
    elif cfg.get("url"):
        files.insert(0, HubFile(None, url=cfg["url"]))
    return files


def _unreachable(url: str) -> str | None:
    """Why the server of `url` cannot be reached (one request, `PROBE_TIMEOUT`, the environment's proxies), or None if it answers."""
    parts = urlsplit(url)
    try:
        request = urllib.request.Request(f"{parts.scheme}://{parts.netloc}/", method="HEAD")
        with urllib.request.urlopen(request, timeout=PROBE_TIMEOUT):
            return None
    except urllib.error.HTTPError:
        return None  # it answered, if only with an error status
    except (urllib.error.URLError, OSError, ValueError) as err:
        reason = getattr(err, "reason", err)
        return str(getattr(reason, "strerror", None) or reason)


def _fix(name: str) -> str:
    return (f"to run {name} offline, pass pretrained=FILE (a local open_clip checkpoint) or model=FOLDER "
            "(a local Hugging Face CLIP folder), or fill the cache once on a machine online and set HF_HUB_OFFLINE=1")


@contextmanager
def _hub_offline() -> Iterator[None]:
    """huggingface_hub's offline switch on for the duration (it reads `constants.HF_HUB_OFFLINE` at each request).

    The switch is the process's: entered only when every file the load needs is cached, and restored
    after; a hub request made by another thread meanwhile would be refused as offline.
    """
    from huggingface_hub import constants

    before = constants.HF_HUB_OFFLINE
    constants.HF_HUB_OFFLINE = True
    try:
        yield
    finally:
        constants.HF_HUB_OFFLINE = before


@contextmanager
def local_first(name: str, pretrained: str | None) -> Iterator[None]:
    """Run a load of open_clip model `name` with tag `pretrained` (or an `hf-hub:` name) from the caches when they hold
    everything, or fail at once in one line when a missing file cannot be fetched (see the module docstring)."""
    from huggingface_hub import constants

    needed = files_needed(name, pretrained)
    missing = [f for f in needed if not f.cached()]
    if not needed:
        yield
    elif not missing:
        with _hub_offline():
            yield
    else:
        label = f"{name} with pretrained={pretrained}" if pretrained else name
        if constants.is_offline_mode():
            raise ModelLoadError(f"{label}: {missing[0]} is not in the local cache and HF_HUB_OFFLINE is set; {_fix(name)}")
        server = missing[0].server()
        reason = _unreachable(server)
        if reason:
            raise ModelLoadError(f"{label}: {missing[0]} is not in the local cache and {server} cannot be reached "
                                 f"({reason}; offline?); {_fix(name)}")
        yield  # the server answers: open_clip fetches as usual
