"""Start and stop real processes (daphne, runscheduler, manage.py) for tests."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from realtime.embedded import free_port, wait_for_port
from realtime.server import daphne_command

ROOT = Path(__file__).resolve().parents[2]
PYTHON = sys.executable


def env_for(database_url: str, redis_url: str, **extra: str) -> dict[str, str]:
    env = dict(os.environ)
    env.update(
        DATABASE_URL=database_url,
        REDIS_URL=redis_url,
        DEBUG="1",
        DJANGO_SETTINGS_MODULE="project.settings",
        PYTHONUNBUFFERED="1",
        **extra,
    )
    return env


def manage(
    env: dict[str, str], *args: str, input: str | None = None, check: bool = True
) -> subprocess.CompletedProcess:
    done = subprocess.run(
        [PYTHON, "manage.py", *args],
        cwd=ROOT,
        env=env,
        input=input,
        text=True,
        capture_output=True,
        timeout=120,
    )
    if check and done.returncode != 0:
        raise AssertionError(
            f"manage.py {' '.join(args)} exited with {done.returncode}:\n{done.stderr[-3000:]}"
        )
    return done


class Proc:
    """A child process in its own process group, stopped by pid at the end."""

    def __init__(self, args: list[str], env: dict[str, str], log: Path):
        self.log_path = log
        self.log = open(log, "wb")  # noqa: SIM115
        self.popen = subprocess.Popen(
            args,
            cwd=ROOT,
            env=env,
            stdout=self.log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )

    @property
    def pid(self) -> int:
        return self.popen.pid

    def alive(self) -> bool:
        return self.popen.poll() is None

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 15) -> int:
        if self.alive():
            os.killpg(self.popen.pid, sig)
            try:
                self.popen.wait(timeout)
            except subprocess.TimeoutExpired:
                os.killpg(self.popen.pid, signal.SIGKILL)
                self.popen.wait()
        self.log.close()
        return self.popen.returncode

    def output(self) -> str:
        if not self.log.closed:
            self.log.flush()
        return self.log_path.read_text(errors="replace")

    def wait_for_output(self, text: str, timeout: float = 30) -> None:
        """Wait until the process has logged ``text``; raise if it exits or times out first."""
        deadline = time.monotonic() + timeout
        while text not in self.output():
            if not self.alive():
                raise RuntimeError(f"process exited before logging {text!r}:\n{self.output()}")
            if time.monotonic() > deadline:
                raise TimeoutError(f"no {text!r} after {timeout}s:\n{self.output()}")
            time.sleep(0.05)


def start_daphne(
    env: dict[str, str],
    log: Path,
    port: int | None = None,
    *,
    plain: bool = False,
    workers: int | None = None,
    **options: Any,
) -> tuple[Proc, int]:
    """daphne on a free port: as the project runs it (realtime.server.daphne_command), or
    ``plain``: ``daphne project.asgi:application`` with daphne's own defaults, or ``workers``:
    ``python -m realtime.server --workers N`` (a supervisor and N daphne processes)."""
    port = port or free_port()
    if workers:
        command = [PYTHON, "-m", "realtime.server", "--port", str(port), "--workers", str(workers)]
        env = {"PROMETHEUS_MULTIPROC_DIR": str(log.parent / "prometheus"), **env, "ACCESS_LOG": "1"}
    elif plain:
        command = [PYTHON, "-m", "daphne", "-b", "127.0.0.1", "-p", str(port)]
        command.append("project.asgi:application")
    else:
        command = daphne_command("127.0.0.1", port, access_log=True, **options)
    proc = Proc(command, env, log)
    try:
        wait_for_port(port, timeout=30)
    except TimeoutError:
        proc.stop()
        raise RuntimeError(f"daphne did not start:\n{proc.output()}") from None
    return proc, port


def start_scheduler(env: dict[str, str], log: Path, *extra: str) -> Proc:
    proc = Proc([PYTHON, "manage.py", "runscheduler", *extra], env, log)
    proc.wait_for_output("scheduler started")
    return proc


# What makes one site's environment its own, not part of what its database is seeded from
# (nor is pytest's PYTEST_CURRENT_TEST, different for every test: keyed on it, no site ever
# found its template and each migrated and seeded its own, 2 s of CPU per site).
SITE_OWN = ("DATABASE_URL", "REDIS_PREFIX", "PROMETHEUS_MULTIPROC_DIR")
_seeded: dict[tuple, Path] = {}


def prepare_database(env: dict[str, str]) -> None:
    """``migrate`` then ``seeddemo`` for a site's fresh database. A SQLite one is copied from
    a database this test process migrated and seeded once with the same settings (two
    ``manage.py`` processes, 3-4 s of CPU, saved per site)."""
    import shutil
    import tempfile

    url = env["DATABASE_URL"]
    if not url.startswith("sqlite:///"):
        manage(env, "migrate", "--noinput")
        manage(env, "seeddemo")
        return
    key = tuple(
        sorted((k, v) for k, v in env.items() if k not in SITE_OWN and not k.startswith("PYTEST_"))
    )
    seeded = _seeded.get(key)
    if seeded is None or not seeded.exists():
        seeded = Path(tempfile.mkdtemp(prefix="seeded-site-")) / "site.sqlite3"
        template = {**env, "DATABASE_URL": f"sqlite:///{seeded}"}
        manage(template, "migrate", "--noinput")
        manage(template, "seeddemo")
        _seeded[key] = seeded
    target = Path(url[len("sqlite:///") :])
    shutil.copyfile(seeded, target)
    wal = seeded.with_name(seeded.name + "-wal")
    if wal.exists():
        shutil.copyfile(wal, target.with_name(target.name + "-wal"))


class Site:
    """A running site: a fresh SQLite database, daphne and runscheduler, all stopped by pid.
    Its Redis keys have a prefix of their own (``prefix``)."""

    def __init__(
        self,
        tmp_path: Path,
        redis_url: str,
        daphne_options: dict | None = None,
        *,
        plain: bool = False,
        workers: int | None = None,
        **env: str,
    ):
        import uuid

        self.workers = workers
        self.tmp_path = tmp_path
        self.daphne_options = daphne_options or {}
        self.plain = plain
        self.redis_url = redis_url
        self.prefix = env.pop("REDIS_PREFIX", f"site-{uuid.uuid4().hex[:8]}")
        database = env.pop("DATABASE_URL", f"sqlite:///{tmp_path / 'site.sqlite3'}")
        self.env = env_for(database, redis_url, REDIS_PREFIX=self.prefix, **env)
        self.daphne: Proc | None = None
        self.scheduler: Proc | None = None
        self.port: int | None = None
        self.starts = 0

    def start(self, scheduler: bool = True) -> Site:
        # Setting up needs no pool (a test's tiny one, DB_POOL_MAX_SIZE=1 with a 50 ms
        # timeout, once failed seeddemo on a busy machine).
        prepare_database({**self.env, "DB_POOL": "0"})
        self.start_daphne()
        if scheduler:
            self.scheduler = start_scheduler(self.env, self.tmp_path / "scheduler.log")
        return self

    def start_daphne(self) -> None:
        self.starts += 1
        self.daphne, self.port = start_daphne(
            self.env,
            self.tmp_path / f"daphne-{self.starts}.log",
            self.port,
            plain=self.plain,
            workers=self.workers,
            **self.daphne_options,
        )

    def stop_daphne(self) -> None:
        if self.daphne is not None:
            self.daphne.stop()
            self.daphne = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def ws_url(self) -> str:
        return f"ws://127.0.0.1:{self.port}/ws/"

    def shell(self, code: str) -> str:
        """Run Python in ``manage.py shell`` against the site; return its output."""
        return manage(self.env, "shell", "-c", code).stdout

    def presence(self) -> dict[str, int]:
        """Subscriber counts by topic summed over the site's live hubs, and ``_connections``
        (what every hub reports to Redis every 2 s)."""
        import redis

        client = redis.Redis.from_url(self.redis_url)
        total: dict[str, int] = {}
        try:
            for key in client.scan_iter(match=f"{self.prefix}:rt:presence:*"):
                for field, value in client.hgetall(key).items():
                    total[field.decode()] = total.get(field.decode(), 0) + int(value)
        finally:
            client.close()
        return total

    def publish(self, slug: str, data: str) -> int:
        return int(manage(self.env, "publish", slug, data).stdout.strip())

    def stop(self) -> int | None:
        code = self.scheduler.stop() if self.scheduler is not None else None
        self.stop_daphne()
        return code
