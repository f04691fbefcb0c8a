"""``python -m realtime.server --workers N``: N daphne processes serving one port.

The supervisor binds N listening sockets to the same address with ``SO_REUSEPORT`` (the
kernel spreads new connections over them by a hash of the client's address and port) and
hands socket *i* to worker *i* (daphne ``--fd``, each with the flags of
``realtime.server.daphne_command``). It keeps its own copy of every socket, so a worker that
dies leaves its socket listening: connections hashed to it wait in the backlog until the
replacement, started at once (with a back-off when a worker keeps dying young), accepts them.

SIGTERM or SIGINT: the supervisor closes its copies, then sends SIGTERM to every worker, which
stops listening (the port refuses connections once all have), closes its sockets with 1001
and exits. Whatever has not exited 14 s later is killed, so the whole stop takes under 15 s.
Workers die with the supervisor (``PR_SET_PDEATHSIG``), even if it is killed.

Metrics: every worker writes to ``PROMETHEUS_MULTIPROC_DIR`` (default
``var/prometheus-<port>``), so ``/metrics`` from any of them sums the host. Files of processes
that no longer run are removed at start; a worker that dies has its live gauges removed.
"""

from __future__ import annotations

import logging
import os
import re
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

logger = logging.getLogger("realtime.supervisor")

STOP_TIMEOUT = 14.0  # SIGTERM → SIGKILL; the supervisor exits within 15 s of a stop signal
YOUNG = 5.0  # a worker that dies younger than this is restarted after a growing delay
MAX_RESTART_DELAY = 10.0


def listening_sockets(host: str, port: int, count: int, backlog: int) -> list[socket.socket]:
    """``count`` sockets listening on (host, port) with SO_REUSEPORT (port 0: one free port)."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sockets: list[socket.socket] = []
    try:
        for _ in range(count):
            sock = socket.socket(family, socket.SOCK_STREAM)
            sockets.append(sock)
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
            sock.bind((host, port))
            port = sock.getsockname()[1]  # with port 0, the others join the first one's
            sock.listen(backlog)
            sock.set_inheritable(True)
    except OSError:
        for sock in sockets:
            sock.close()
        raise
    return sockets


def _die_with_parent() -> None:
    """In the child before exec: get SIGTERM when the supervisor dies (Linux)."""
    try:
        import ctypes

        ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG
    except Exception:  # noqa: BLE001 (not Linux: workers outlive a killed supervisor)
        pass


def remove_stale_metrics(directory: Path) -> int:
    """Remove prometheus-client files of processes that no longer run; return how many."""
    removed = 0
    for path in directory.glob("*.db"):
        match = re.search(r"_(\d+)\.db$", path.name)
        if match and not _running(int(match.group(1))):
            path.unlink(missing_ok=True)
            removed += 1
    return removed


def _running(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


class Worker:
    def __init__(self, slot: int, sock: socket.socket):
        self.slot = slot
        self.sock = sock
        self.process: subprocess.Popen | None = None
        self.started = 0.0
        self.failures = 0  # consecutive deaths at a young age
        self.restart_at = 0.0


class Supervisor:
    def __init__(self, host: str, port: int, workers: int, command: Any, env: dict[str, str]):
        if workers < 1:
            raise ValueError(f"--workers must be at least 1, not {workers}")
        self.host, self.port, self.count = host, port, workers
        self.command = command  # fd -> argv
        self.env = env
        self.workers: list[Worker] = []
        self.stopping = False

    def start(self, backlog: int) -> None:
        sockets = listening_sockets(self.host, self.port, self.count, backlog)
        self.port = sockets[0].getsockname()[1]
        self.workers = [Worker(i, sock) for i, sock in enumerate(sockets)]
        for worker in self.workers:
            self._spawn(worker)
        logger.info(
            "serving http://%s:%d with %d worker(s): %s",
            self.host,
            self.port,
            self.count,
            " ".join(str(w.process.pid) for w in self.workers if w.process),
        )

    def _spawn(self, worker: Worker) -> None:
        fd = worker.sock.fileno()
        worker.process = subprocess.Popen(
            self.command(fd),
            env={**self.env, "REALTIME_WORKER": str(worker.slot)},
            pass_fds=(fd,),
            preexec_fn=_die_with_parent,  # noqa: PLW1509 (the supervisor has no threads)
            start_new_session=True,  # a terminal's Ctrl-C reaches the supervisor only
        )
        worker.started = time.monotonic()
        logger.info("worker %d started: pid %d", worker.slot, worker.process.pid)

    def watch(self) -> None:
        """Restart workers that exit, until a stop signal."""
        while not self.stopping:
            now = time.monotonic()
            for worker in self.workers:
                process = worker.process
                if process is not None and process.poll() is not None:
                    self._died(worker, process, now)
                if worker.process is None and now >= worker.restart_at and not self.stopping:
                    self._spawn(worker)
            time.sleep(0.1)

    def _died(self, worker: Worker, process: subprocess.Popen, now: float) -> None:
        from prometheus_client import multiprocess

        age = now - worker.started
        worker.failures = worker.failures + 1 if age < YOUNG else 0
        delay = min(MAX_RESTART_DELAY, 0.5 * 2 ** (worker.failures - 1)) if worker.failures else 0
        worker.restart_at = now + delay
        worker.process = None
        logger.warning(
            "worker %d (pid %d) exited with %s after %.1fs; restarting%s",
            worker.slot,
            process.pid,
            process.returncode,
            age,
            f" in {delay:.1f}s" if delay else "",
        )
        if self.env.get("PROMETHEUS_MULTIPROC_DIR"):
            multiprocess.mark_process_dead(process.pid, self.env["PROMETHEUS_MULTIPROC_DIR"])

    def stop(self, *_: Any) -> None:
        self.stopping = True

    def shutdown(self) -> int:
        """Stop every worker (SIGTERM, then SIGKILL after STOP_TIMEOUT); 0 when all stopped
        by themselves."""
        for worker in self.workers:
            worker.sock.close()
        running = [w.process for w in self.workers if w.process and w.process.poll() is None]
        logger.info("stopping %d worker(s)", len(running))
        for process in running:
            process.send_signal(signal.SIGTERM)
        deadline = time.monotonic() + STOP_TIMEOUT
        killed = 0
        for process in running:
            try:
                process.wait(max(0.0, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()
                killed += 1
        if killed:
            logger.warning("killed %d worker(s) that did not stop in %.0fs", killed, STOP_TIMEOUT)
        return 1 if killed else 0


def run(host: str, port: int, workers: int, command: Any, backlog: int) -> int:
    env = dict(os.environ)
    if not env.get("PROMETHEUS_MULTIPROC_DIR"):
        from django.conf import settings

        env["PROMETHEUS_MULTIPROC_DIR"] = str(Path(settings.VAR_DIR) / f"prometheus-{port}")
    directory = Path(env["PROMETHEUS_MULTIPROC_DIR"])
    directory.mkdir(parents=True, exist_ok=True)
    remove_stale_metrics(directory)
    supervisor = Supervisor(host, port, workers, command, env)
    signal.signal(signal.SIGTERM, supervisor.stop)
    signal.signal(signal.SIGINT, supervisor.stop)
    try:
        supervisor.start(backlog)
    except OSError as exc:
        print(f"cannot listen on {host}:{port}: {exc}", file=sys.stderr)
        return 2
    try:
        supervisor.watch()
    finally:
        code = supervisor.shutdown()
    logger.info("stopped")
    return code
