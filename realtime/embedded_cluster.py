"""A Redis Cluster on this machine for tests and the benchmark: three masters and three
replicas from Debian's ``redis-server`` (7 or later: sharded pub/sub), on free ports, joined
with ``redis-cli --cluster create``. Not for production."""

from __future__ import annotations

import os
import random
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from pathlib import Path

from realtime.embedded import server_command, wait_for_port


def _free(port: int) -> bool:
    with socket.socket() as s:
        try:
            s.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


def free_cluster_port(taken: set[int] = frozenset()) -> int:
    """A free port whose cluster bus port (+10000) is free too (a node's port must be
    at most 55535)."""
    for _ in range(1000):
        port = random.randint(20000, 45000)
        if port not in taken and port + 10000 not in taken and _free(port) and _free(port + 10000):
            return port
    raise RuntimeError("no free port pair for a cluster node")


def cluster_binaries() -> tuple[str, str]:
    """(redis-server, redis-cli) of version 7 or later, or RuntimeError saying what to install."""
    server, cli = shutil.which("redis-server"), shutil.which("redis-cli")
    if not server or not cli:
        raise RuntimeError(
            "A Redis Cluster needs Debian's redis-server and redis-cli (apt-get install "
            "redis-server); scripts/ensure-services installs them."
        )
    version = subprocess.run([server, "--version"], capture_output=True, text=True).stdout
    major = int(version.split("v=", 1)[1].split(".", 1)[0]) if "v=" in version else 0
    if major < 7:
        raise RuntimeError(f"Sharded pub/sub needs redis-server 7 or later, not {version!r}.")
    return server, cli


class EmbeddedCluster:
    """``masters`` masters with one replica each, every node a child process."""

    def __init__(self, masters: int = 3, directory: str | os.PathLike | None = None):
        self.count = masters * 2
        self.masters = masters
        self.directory = Path(directory or tempfile.mkdtemp(prefix="realtime-cluster-"))
        self.ports: list[int] = []
        self.processes: dict[int, subprocess.Popen] = {}

    @property
    def url(self) -> str:
        """The ``redis+cluster://`` URL naming every node as a seed."""
        return "redis+cluster://" + ",".join(f"127.0.0.1:{p}" for p in self.ports) + "/0"

    def _start_node(self, port: int) -> None:
        server, _ = cluster_binaries()
        node_dir = self.directory / str(port)
        node_dir.mkdir(parents=True, exist_ok=True)
        self.processes[port] = subprocess.Popen(
            server_command(
                server,
                port,
                node_dir,
                "--cluster-enabled",
                "yes",
                "--cluster-config-file",
                "nodes.conf",
                "--cluster-node-timeout",
                "1000",
            ),
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        wait_for_port(port)

    def start(self, timeout: float = 30.0) -> EmbeddedCluster:
        _, cli = cluster_binaries()
        self.ports = []
        for _ in range(self.count):
            self.ports.append(free_cluster_port({q + d for q in self.ports for d in (0, 10000)}))
        try:
            for port in self.ports:
                self._start_node(port)
            subprocess.run(
                [cli, "--cluster", "create", *(f"127.0.0.1:{p}" for p in self.ports)]
                + ["--cluster-replicas", "1", "--cluster-yes"],
                check=True,
                capture_output=True,
                timeout=timeout,
            )
            self.wait_ok(timeout)
        except BaseException:
            self.stop()
            raise
        return self

    def _cli(self, port: int, *args: str) -> str:
        _, cli = cluster_binaries()
        done = subprocess.run(
            [cli, "-p", str(port), *args], capture_output=True, text=True, timeout=5
        )
        return done.stdout

    def wait_ok(self, timeout: float = 30.0) -> None:
        """Wait until every running node says the cluster is ok and has all its replicas."""
        deadline = time.monotonic() + timeout
        while True:
            states = [
                self._cli(port, "cluster", "info")
                for port, process in self.processes.items()
                if process.poll() is None
            ]
            replicas = sum(1 for port in self.alive() if self.role(port) == "slave")
            if (
                states
                and all("cluster_state:ok" in state for state in states)
                and replicas >= len(self.alive()) - self.masters
            ):
                return
            if time.monotonic() > deadline:
                raise TimeoutError(f"the cluster is not ok after {timeout}s")
            time.sleep(0.2)

    def alive(self) -> list[int]:
        return [port for port, process in self.processes.items() if process.poll() is None]

    def role(self, port: int) -> str:
        for line in self._cli(port, "role").splitlines():
            return line.strip()
        return ""

    def master_ports(self) -> list[int]:
        return [port for port in self.alive() if self.role(port) == "master"]

    def replica_of(self, master: int) -> int | None:
        for port in self.alive():
            lines = self._cli(port, "role").splitlines()
            if lines and lines[0] == "slave" and len(lines) > 2 and lines[2] == str(master):
                return port
        return None

    def kill(self, port: int) -> None:
        """SIGKILL one node (a crash)."""
        process = self.processes[port]
        process.send_signal(signal.SIGKILL)
        process.wait()

    def stop(self) -> None:
        for process in self.processes.values():
            if process.poll() is None:
                process.terminate()
        for process in self.processes.values():
            try:
                process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()
        self.processes.clear()

    def __enter__(self) -> EmbeddedCluster:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
