from django.apps import AppConfig


class RealtimeConfig(AppConfig):
    name = "realtime"
    verbose_name = "Real-time topics"
    default_auto_field = "django.db.models.BigAutoField"

    def ready(self) -> None:
        from realtime import checks  # noqa: F401  (registers the system checks)
        from realtime.feeds import autodiscover
        from realtime.wire import defer_autobahn_config_log

        autodiscover()
        defer_autobahn_config_log()
