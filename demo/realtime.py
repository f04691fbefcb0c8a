"""The demo's live data, found at start like admin.py: families and model broadcasts."""

from __future__ import annotations

from typing import Any

from django.db.models.signals import post_save

import realtime
from demo.models import Order, Service


@realtime.family("services", kind="state", title="Service status")
class Services:
    """``services:<slug>``: a service's current state, readable by everyone."""

    def can_read(user: Any, key: str) -> bool:
        return True


realtime.broadcasts(Service, family="services", key="slug", template="demo/service.html")


@realtime.family("orders", presence=True, whispers=True, title="Orders")
class Orders:
    """``orders:<pk>``: the order's owner and staff read it, see who is on it and whisper;
    staff publish."""

    def can_read(user: Any, key: str) -> bool:
        if not user.is_authenticated or not key.isdigit():
            return False
        return user.is_staff or Order.objects.filter(pk=int(key), owner_id=user.pk).exists()

    def can_publish(user: Any, key: str) -> bool:
        return user.is_authenticated and user.is_staff


def _order_saved(sender: Any, instance: Order, created: bool, **kwargs: Any) -> None:
    if not created:  # the owner may have changed: open subscriptions are checked again
        realtime.access_changed(f"orders:{instance.pk}")


post_save.connect(_order_saved, sender=Order, dispatch_uid="demo.orders.access")
