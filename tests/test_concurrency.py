"""seq under concurrent writers: several processes publish to one topic at once, on SQLite
and on PostgreSQL; every seq 1..N is allocated exactly once."""

from __future__ import annotations

import subprocess

from tests.helpers.processes import PYTHON, ROOT, env_for, manage

WORKERS, EACH = 4, 40


def run_parallel_publishers(env: dict[str, str], topic: str = "race") -> list[int]:
    manage(env, "migrate", "--noinput")
    if ":" not in topic:  # a family's topic is made by its first publish
        manage(env, "topics", "add", topic)
    workers = [
        subprocess.Popen(
            [PYTHON, "tests/helpers/publisher.py", topic, str(EACH)],
            cwd=ROOT,
            env=env,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
        )
        for _ in range(WORKERS)
    ]
    try:
        for w in workers:  # a barrier: every worker is set up before any publishes
            assert w.stdout.readline().strip() == "ready"
        for w in workers:
            w.stdin.write("go\n")
            w.stdin.flush()
        seqs = []
        for w in workers:
            out, _ = w.communicate(timeout=120)
            assert w.returncode == 0
            mine = [int(s) for s in out.split()]
            assert mine == sorted(mine)  # each writer sees its own seqs increase
            seqs += mine
        return seqs
    finally:
        for w in workers:
            if w.poll() is None:
                w.kill()


def check_store(env: dict[str, str], topic: str = "race") -> None:
    out = manage(env, "topics").stdout
    rows = [line.split() for line in out.splitlines() if line.split()[:1] == [topic]]
    assert len(rows) == 1  # one row, however many processes published first at once
    row = rows[0]
    assert row[-2:] == [str(WORKERS * EACH), str(WORKERS * EACH)]  # last seq, message count


def test_parallel_publishers_on_sqlite_get_gapless_unique_seqs(tmp_path, redis_url):
    env = env_for(f"sqlite:///{tmp_path / 'race.sqlite3'}", redis_url)
    seqs = run_parallel_publishers(env)
    assert sorted(seqs) == list(range(1, WORKERS * EACH + 1))
    check_store(env)


def test_parallel_publishers_on_postgresql_get_gapless_unique_seqs(postgres_database, redis_url):
    env = env_for(postgres_database, redis_url)
    seqs = run_parallel_publishers(env)
    assert sorted(seqs) == list(range(1, WORKERS * EACH + 1))
    check_store(env)


def test_parallel_first_publishes_to_a_family_topic_make_one_row_on_postgresql(
    postgres_database, redis_url
):
    env = env_for(postgres_database, redis_url)
    seqs = run_parallel_publishers(env, "services:race")
    assert sorted(seqs) == list(range(1, WORKERS * EACH + 1))
    check_store(env, "services:race")


def test_parallel_first_publishes_to_a_family_topic_make_one_row_on_sqlite(tmp_path, redis_url):
    env = env_for(f"sqlite:///{tmp_path / 'race.sqlite3'}", redis_url)
    seqs = run_parallel_publishers(env, "services:race")
    assert sorted(seqs) == list(range(1, WORKERS * EACH + 1))
    check_store(env, "services:race")
