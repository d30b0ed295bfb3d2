"""Headless Chromium and a live `eclip serve`, for the browser tests and `bench/bench_serve.py`.

Chromium is the distribution's (`apt-get install chromium`), driven by Playwright through
`executable_path`: no browser is downloaded. Every flag that would make it reach the network on
its own is off, and each run gets a fresh profile.
"""
from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import IO

CHROMIUM = os.environ.get("ECLIP_CHROMIUM") or shutil.which("chromium") or shutil.which("chromium-browser") or "/usr/bin/chromium"
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync",
                 "--disable-dev-shm-usage"]


def missing() -> str | None:
    """Why the browser checks cannot run here, or None when they can."""
    if os.environ.get("ECLIP_BROWSER_SKIP"):
        return os.environ["ECLIP_BROWSER_SKIP"]
    if not Path(CHROMIUM).is_file():
        return f"no Chromium at {CHROMIUM}; install it with `apt-get install -y chromium` (or set ECLIP_CHROMIUM)"
    for module, extra in (("playwright", "browser"), ("gradio", "demo")):
        try:
            __import__(module)
        except ImportError:
            return f"{module} is not installed; pip install -e '.[{extra}]'"
    return None


@contextmanager
def chromium(width: int = 1400, height: int = 1000) -> Iterator:
    """A headless Chromium context with a fresh profile; yields a Playwright BrowserContext."""
    from playwright.sync_api import sync_playwright

    profile = tempfile.mkdtemp(prefix="eclip-chromium-")
    try:
        with sync_playwright() as playwright:
            context = playwright.chromium.launch_persistent_context(
                profile, executable_path=CHROMIUM, headless=True, args=CHROMIUM_ARGS,
                viewport={"width": width, "height": height})
            try:
                yield context
            finally:
                context.close()
    finally:
        shutil.rmtree(profile, ignore_errors=True)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@dataclass
class Served:
    """A running `eclip serve`: its URL, its process and its log so far."""

    url: str
    process: subprocess.Popen
    log: IO[str]

    def output(self) -> str:
        self.log.seek(0)
        return self.log.read()


@contextmanager
def eclip_process(*args: str, timeout: float = 180.0, env: dict[str, str] | None = None) -> Iterator[Served]:
    """`eclip serve ARGS` on a free local port, in its own process (`env` added to ours), once it answers; stopped
    after (SIGTERM, as `kill` stops it) unless the caller stopped it already."""
    port = free_port()
    log = tempfile.TemporaryFile(mode="w+")
    command = [sys.executable, "-c", "from eclip.cli import main; main()", "serve", "--port", str(port), *args]
    process = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT,
                               env={**os.environ, "GRADIO_ANALYTICS_ENABLED": "False", **(env or {})})
    served = Served(f"http://127.0.0.1:{port}/", process, log)
    try:
        deadline = time.monotonic() + timeout
        while True:
            if process.poll() is not None:
                raise RuntimeError(f"eclip serve exited with {process.returncode}:\n{served.output()}")
            try:
                with urllib.request.urlopen(served.url, timeout=2) as response:
                    if response.status == 200:
                        break
            except OSError:
                pass
            if time.monotonic() > deadline:
                raise TimeoutError(f"eclip serve did not answer on {served.url} within {timeout:.0f} s")
            time.sleep(0.25)
        yield served
    finally:
        if process.poll() is None:
            process.terminate()
        try:
            process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
        log.close()


@contextmanager
def eclip_server(*args: str, timeout: float = 180.0, env: dict[str, str] | None = None) -> Iterator[str]:
    """`eclip serve ARGS` on a free local port, in its own process (`env` added to ours); yields its URL and stops it after."""
    with eclip_process(*args, timeout=timeout, env=env) as served:
        yield served.url


def screenshot(page, folder: Path, name: str):
    """The page as a user sees it, as an (H, W, 3) int array; the PNG stays in `folder` and is copied to
    $ECLIP_SCREENSHOTS when that is set (to look at the page after a run)."""
    import numpy as np
    from PIL import Image

    shot = folder / name
    page.screenshot(path=str(shot))
    keep = os.environ.get("ECLIP_SCREENSHOTS")
    if keep:
        Path(keep).mkdir(parents=True, exist_ok=True)
        shutil.copy(shot, Path(keep) / shot.name)
    return np.asarray(Image.open(shot).convert("RGB")).astype(int)
