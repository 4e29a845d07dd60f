"""Browser-test fixtures: a dashboard server in a child process and headless Chromium.

These tests fail (never skip) when Playwright or Chromium is missing: `make test-deps`
installs Debian's chromium, and the `test` extra installs playwright.
"""
from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

CHROMIUM = os.environ.get("TOMODASH_CHROMIUM", "/usr/bin/chromium")
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync", "--no-first-run"]
SCREENSHOTS = Path(__file__).parent / "screenshots"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class DashboardServer:
    def __init__(self, sessions: list[Path], *extra: str, log: Path):
        self.port = free_port()
        self.url = f"http://localhost:{self.port}"
        env = dict(os.environ, PATH=f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}")
        self.log = log
        self._log = open(log, "w")
        self.proc = subprocess.Popen([sys.executable, "-m", "dashboard.cli", "serve", *map(str, sessions),
                                      "--port", str(self.port), "--poll-ms", "500", *extra],
                                     stdout=self._log, stderr=subprocess.STDOUT, env=env, start_new_session=True)
        deadline = time.monotonic() + 60
        while True:
            if self.proc.poll() is not None:
                raise AssertionError(f"dashboard server exited {self.proc.returncode}:\n{log.read_text()}")
            try:
                urllib.request.urlopen(f"{self.url}/login" if "--auth" in extra else self.url, timeout=5)
                break
            except Exception:
                if time.monotonic() > deadline:
                    self.stop()
                    raise AssertionError(f"dashboard server did not answer:\n{log.read_text()}")
                time.sleep(0.3)

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
        self._log.close()


@pytest.fixture(scope="session")
def browser():
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        pytest.fail("the browser tests need the playwright package (pip install -e '.[test]')")
    if not (os.path.exists(CHROMIUM) or shutil.which("chromium")):
        pytest.fail(f"the browser tests need Chromium at {CHROMIUM} (make test-deps installs Debian's chromium)")
    with sync_playwright() as p:
        b = p.chromium.launch(executable_path=CHROMIUM if os.path.exists(CHROMIUM) else shutil.which("chromium"),
                              args=CHROMIUM_ARGS)
        yield b
        b.close()


@pytest.fixture(scope="session")
def screenshots() -> Path:
    SCREENSHOTS.mkdir(exist_ok=True)
    return SCREENSHOTS
