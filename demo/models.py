"""The demo's models: services on the status board, and orders that only their owner reads."""

from __future__ import annotations

from django.conf import settings
from django.core.validators import RegexValidator
from django.db import models


class Service(models.Model):
    """A service on the status board (``/status/``); its topic is ``services:<slug>``."""

    class Status(models.TextChoices):
        OPERATIONAL = "operational", "Operational"
        DEGRADED = "degraded", "Degraded performance"
        OUTAGE = "outage", "Outage"
        MAINTENANCE = "maintenance", "Maintenance"

    slug = models.SlugField(
        max_length=100,
        unique=True,
        validators=[RegexValidator(r"^[A-Za-z0-9_.-]+\Z", "Letters, digits, '_', '.' and '-'.")],
        help_text="Its address: /status/<slug>/ (and its topic services:<slug>).",
    )
    name = models.CharField(max_length=100)
    status = models.CharField(max_length=20, choices=Status.choices, default=Status.OPERATIONAL)
    note = models.TextField(blank=True, help_text="Shown under the status, e.g. what is done.")
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        ordering = ["name"]

    def __str__(self) -> str:
        return self.name

    def get_absolute_url(self) -> str:
        from django.urls import reverse

        return reverse("demo:service", args=[self.slug])


class Order(models.Model):
    """An order: its topic ``orders:<pk>`` is read by its owner and by staff."""

    owner = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="demo_orders"
    )
    item = models.CharField(max_length=200)
    status = models.CharField(max_length=40, default="received")
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        ordering = ["-pk"]

    def __str__(self) -> str:
        return f"Order {self.pk}: {self.item}"
