"""PostgreSQL under HTTP API load, against real daphne: each process holds a bounded pool of
connections (DB_POOL_MAX_SIZE) whatever the load, answers 503 with Retry-After rather than
exhaust the server, gives connections back when idle; and a token revoked while 30 clients
publish with it stores nothing once ``manage.py tokens revoke`` has returned."""

from __future__ import annotations

import http.client
import json
import threading
import time
from collections import Counter

import psycopg
import pytest

from tests.conftest import POSTGRES_URL
from tests.helpers.processes import manage

pytestmark = pytest.mark.e2e

FAST = {"API_RATE_PER_S": 1_000_000, "API_BURST": 1_000_000}


def add_token(site, name: str) -> str:
    # Without the site's pool: a test's tiny one (1 connection, 50 ms) once timed out this
    # command's first connection on a busy machine, before the test began.
    env = {**site.env, "DB_POOL": "0"}
    return manage(env, "tokens", "add", name).stdout.strip().splitlines()[-1]


class Publishers:
    """``n`` threads POSTing to the API as fast as they can, each on its own keep-alive
    connection, until stopped (or, with ``until_refused``, until each is answered 401)."""

    def __init__(self, port: int, secret: str, n: int, *, until_refused: bool = False):
        self.port, self.secret, self.until_refused = port, secret, until_refused
        self.statuses: Counter[int] = Counter()
        self.retry_after: set[str | None] = set()
        self.lock = threading.Lock()
        self.stop = threading.Event()
        self.threads = [threading.Thread(target=self.run, daemon=True) for _ in range(n)]
        for thread in self.threads:
            thread.start()

    def run(self) -> None:
        connection = http.client.HTTPConnection("127.0.0.1", self.port, timeout=30)
        headers = {"Authorization": f"Bearer {self.secret}", "Content-Type": "application/json"}
        body = json.dumps({"data": {"load": True}})
        while not self.stop.is_set():
            try:
                connection.request("POST", "/api/v1/topics/news/messages", body, headers)
                response = connection.getresponse()
                response.read()
            except (OSError, http.client.HTTPException):
                connection.close()
                with self.lock:
                    self.statuses[0] += 1
                continue
            with self.lock:
                self.statuses[response.status] += 1
                if response.status == 503:
                    self.retry_after.add(response.getheader("Retry-After"))
            if self.until_refused and response.status == 401:
                break
        connection.close()

    def join(self, timeout: float = 60) -> None:
        for thread in self.threads:
            thread.join(timeout)
            assert not thread.is_alive(), "a publisher did not finish"


def connections(admin: psycopg.Connection, database: str) -> int:
    row = admin.execute(
        "SELECT count(*) FROM pg_stat_activity WHERE datname = %s", [database]
    ).fetchone()
    return row[0]


def wait_for(predicate, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.05)


def test_api_load_holds_a_bounded_pool_and_gives_it_back(live_site, postgres_database):
    database = postgres_database.rsplit("/", 1)[1]
    site = live_site(
        scheduler=False,
        plain=True,
        DATABASE_URL=postgres_database,
        DB_POOL_MAX_IDLE="0.2",
        realtime=FAST,
    )
    secret = add_token(site, "load")
    with psycopg.connect(POSTGRES_URL, autocommit=True) as admin:
        publishers = Publishers(site.port, secret, 40)
        peak, started = 0, time.monotonic()
        while time.monotonic() - started < 4:
            peak = max(peak, connections(admin, database))
            time.sleep(0.02)
        publishers.stop.set()
        publishers.join()
        assert peak <= 20, f"{peak} connections under load (pool max 20)"
        assert publishers.statuses[201] > 100, publishers.statuses
        assert set(publishers.statuses) <= {201, 503}, publishers.statuses  # never a 500
        assert publishers.retry_after <= {"1"}
        # Idle connections beyond the pool's minimum are closed (one per DB_POOL_MAX_IDLE).
        wait_for(lambda: connections(admin, database) <= 2, 30, "idle connections to close")
    assert "Traceback" not in site.daphne.output()


def test_a_saturated_pool_answers_503_with_retry_after(live_site, postgres_database):
    site = live_site(
        scheduler=False,
        plain=True,
        DATABASE_URL=postgres_database,
        DB_POOL_MAX_SIZE="1",
        DB_POOL_TIMEOUT="0.05",
        realtime=FAST,
    )
    secret = add_token(site, "tight")
    publishers = Publishers(site.port, secret, 20)
    wait_for(lambda: publishers.statuses[503] > 0, 30, "a 503")
    publishers.stop.set()
    publishers.join()
    assert set(publishers.statuses) <= {201, 503}, publishers.statuses
    assert publishers.retry_after == {"1"}


def test_nothing_is_stored_with_a_token_once_revoke_returns(live_site, postgres_database):
    site = live_site(scheduler=False, DATABASE_URL=postgres_database, realtime=FAST)
    secret = add_token(site, "doomed")
    count = "SELECT count(*) FROM realtime_message WHERE origin = 'token:doomed'"
    with psycopg.connect(postgres_database, autocommit=True) as db:
        publishers = Publishers(site.port, secret, 30, until_refused=True)
        wait_for(lambda: db.execute(count).fetchone()[0] >= 50, 60, "50 messages")
        manage(site.env, "tokens", "revoke", "doomed")
        at_return = db.execute(count).fetchone()[0]
        publishers.join()  # each stops at its first 401
        assert db.execute(count).fetchone()[0] == at_return
    assert publishers.statuses[401] == 30 and publishers.statuses[201] >= 50
