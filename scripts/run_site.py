"""Run the whole site locally: embedded Redis (unless REDIS_URL is set), migrate, demo data,
an admin account, ``python -m realtime.server`` (one daphne worker per CPU on one port) and
the scheduler. Ctrl-C stops everything this started."""

from __future__ import annotations

import os
import secrets
import signal
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
os.environ.setdefault("DJANGO_SETTINGS_MODULE", "project.settings")
os.chdir(ROOT)

from realtime.embedded import EmbeddedRedis, wait_for_port  # noqa: E402


def _interrupt(*args: object) -> None:
    raise KeyboardInterrupt


def main() -> int:
    # Explicit handlers: a shell that starts us in the background ignores SIGINT otherwise.
    signal.signal(signal.SIGINT, _interrupt)
    signal.signal(signal.SIGTERM, _interrupt)
    var = ROOT / "var"
    var.mkdir(exist_ok=True)
    redis = None
    if not os.environ.get("REDIS_URL"):
        redis = EmbeddedRedis(directory=var / "redis").start()
        os.environ["REDIS_URL"] = redis.url
        print(f"== embedded Redis on {redis.url}")
    children: list[subprocess.Popen] = []
    try:
        py = sys.executable
        subprocess.run([py, "manage.py", "migrate", "--noinput", "-v", "0"], check=True)
        password_file = var / "admin-password"
        if not password_file.exists():
            password_file.write_text(secrets.token_urlsafe(12))
            password_file.chmod(0o600)
        password = password_file.read_text().strip()
        subprocess.run(
            [py, "manage.py", "seeddemo", "--admin", "admin", "--password", password],
            check=True,
            stdout=subprocess.DEVNULL,
        )

        import django

        django.setup()
        host = os.environ.get("HOST", "127.0.0.1")
        port = int(os.environ.get("PORT", "8000"))
        # The web workers and the scheduler share one metrics directory: /metrics sums them.
        os.environ.setdefault("PROMETHEUS_MULTIPROC_DIR", str(var / f"prometheus-{port}"))
        server = [py, "-m", "realtime.server", "--host", host, "--port", str(port)]
        children.append(subprocess.Popen(server))  # WORKERS (default: one per CPU)
        children.append(subprocess.Popen([py, "manage.py", "runscheduler"]))
        wait_for_port(port, timeout=30, host=host)
        url = f"http://{'localhost' if host in ('127.0.0.1', '0.0.0.0') else host}:{port}/"
        print(
            f"\n== The site is up: {url}\n== Admin: {url}admin/  user: admin  password: "
            f"{password}\n== Ctrl-C stops it.\n",
            flush=True,
        )
        while all(c.poll() is None for c in children):
            time.sleep(0.5)
        print("== a process exited; stopping the rest", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("\n== stopping")
        return 0
    finally:
        for child in children:
            if child.poll() is None:
                child.terminate()
        for child in children:
            try:
                child.wait(timeout=15)
            except subprocess.TimeoutExpired:
                child.kill()
        if redis is not None:
            redis.stop()


if __name__ == "__main__":
    sys.exit(main())
