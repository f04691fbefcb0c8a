"""realtime.supervisor's parts (the whole supervisor runs in test_workers.py): N listening
sockets sharing one port, and the metrics files of dead processes removed at start."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
from pathlib import Path

from realtime import supervisor
from realtime.embedded import free_port


def test_listening_sockets_share_one_port():
    port = free_port()
    socks = supervisor.listening_sockets("127.0.0.1", port, 3, 16)
    try:
        assert len(socks) == 3
        assert {s.getsockname() for s in socks} == {("127.0.0.1", port)}
        assert all(s.getsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT) for s in socks)
        with socket.create_connection(("127.0.0.1", port), timeout=5):
            pass  # one of them accepts
    finally:
        for sock in socks:
            sock.close()


def test_metrics_files_of_dead_processes_are_removed(tmp_path: Path):
    dead = subprocess.run(
        [sys.executable, "-c", "import os; print(os.getpid())"],
        capture_output=True,
        text=True,
        check=True,
    )
    dead_pid = int(dead.stdout)
    (tmp_path / f"counter_{dead_pid}.db").write_bytes(b"x")
    (tmp_path / f"counter_{os.getpid()}.db").write_bytes(b"x")  # this process runs
    (tmp_path / "notes.txt").write_text("not a metrics file")
    assert supervisor.remove_stale_metrics(tmp_path) == 1
    assert sorted(p.name for p in tmp_path.iterdir()) == [f"counter_{os.getpid()}.db", "notes.txt"]
