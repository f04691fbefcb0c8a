from django.apps import AppConfig


class DemoConfig(AppConfig):
    """The demo site's own data: a service status board and orders, kept live by
    ``demo/realtime.py`` (families and model broadcasts)."""

    name = "demo"
    verbose_name = "Demo: status board and orders"
    default_auto_field = "django.db.models.BigAutoField"
