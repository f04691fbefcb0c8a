"""The demo's data: a few services on the status board (idempotent)."""

from __future__ import annotations

from collections.abc import Iterator

from demo.models import Service

SERVICES = [
    ("website", "Website", "operational", ""),
    ("api", "Public API", "operational", ""),
    ("payments", "Payments", "degraded", "Card payments are slower than usual; we are on it."),
]


def seed() -> Iterator[str]:
    for slug, name, status, note in SERVICES:
        _, created = Service.objects.get_or_create(
            slug=slug, defaults={"name": name, "status": status, "note": note}
        )
        if created:
            yield f"created service {slug}"
