"""A publisher process for concurrency tests: set up Django, say "ready", wait for "go" on
stdin, publish N messages to a topic, print the seqs it got."""

import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))))
os.environ.setdefault("DJANGO_SETTINGS_MODULE", "project.settings")

import django  # noqa: E402

django.setup()

from realtime import publish  # noqa: E402

slug, count = sys.argv[1], int(sys.argv[2])
print("ready", flush=True)
if sys.stdin.readline().strip() != "go":
    sys.exit("expected go")
seqs = [publish(slug, {"pid": os.getpid(), "i": i}, source="command").seq for i in range(count)]
print(" ".join(map(str, seqs)), flush=True)
