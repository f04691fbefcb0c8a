"""Production settings: check --deploy is clean; the site refuses the development key."""

import os
import subprocess
import sys

from tests.helpers.processes import ROOT

PRODUCTION = {
    "DEBUG": "0",
    "SECRET_KEY": "k3y-" + "x7Q2m9Zr4Lw8Vn1Tb6Yc5Hs0Pd3Gf" * 2,
    "HTTPS": "1",
    "ALLOWED_HOSTS": "realtime.example.com",
    "DATABASE_URL": "sqlite:////tmp/realtime-deploy-check.sqlite3",
}


def run(args, **env):
    merged = {
        k: v
        for k, v in os.environ.items()
        if k not in PRODUCTION and k != "DJANGO_ALLOW_ASYNC_UNSAFE"
    }
    merged.update(env, DJANGO_SETTINGS_MODULE="project.settings")
    return subprocess.run(args, cwd=ROOT, env=merged, capture_output=True, text=True, timeout=60)


def test_check_deploy_is_clean_with_production_settings():
    result = run(
        [sys.executable, "manage.py", "check", "--deploy", "--fail-level", "WARNING"], **PRODUCTION
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert "no issues" in result.stdout


def test_check_deploy_warns_about_development_settings():
    result = run(
        [sys.executable, "manage.py", "check", "--deploy", "--fail-level", "WARNING"], DEBUG="0"
    )
    assert result.returncode != 0
    assert "security.W009" in result.stderr  # the development secret key


def test_site_refuses_to_start_with_debug_off_and_development_key():
    result = run([sys.executable, "-c", "import project.asgi"], DEBUG="0")
    assert result.returncode != 0
    assert "SECRET_KEY is the development default while DEBUG is off" in result.stderr


def test_site_starts_with_debug_off_and_a_real_key():
    result = run([sys.executable, "-c", "import project.asgi"], **PRODUCTION)
    assert result.returncode == 0, result.stderr


def test_bad_realtime_setting_fails_the_check():
    result = run([sys.executable, "manage.py", "check"], REALTIME='{"MAX_FRAME_BYTE": 5}')
    assert result.returncode != 0
    assert "realtime.E002" in result.stderr
