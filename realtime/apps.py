import os

from django.apps import AppConfig


class RealtimeConfig(AppConfig):
    name = "realtime"
    verbose_name = "Real-time topics"
    default_auto_field = "django.db.models.BigAutoField"

    def __init__(self, app_name: str, app_module: object) -> None:
        super().__init__(app_name, app_module)
        # prometheus-client's multiprocess mode writes under PROMETHEUS_MULTIPROC_DIR from the
        # first metric made, and realtime.metrics makes its metrics when imported (by the
        # admin's autodiscover, before any ready()). Django builds app configs first: make the
        # directory here, once per process.
        directory = os.environ.get("PROMETHEUS_MULTIPROC_DIR")
        if directory:
            os.makedirs(directory, exist_ok=True)

    def ready(self) -> None:
        from django.db.models.signals import post_delete, post_save
        from django.utils.module_loading import autodiscover_modules

        from realtime import access, builtin_feeds, checks, topics  # noqa: F401 (they register)
        from realtime.feeds import autodiscover
        from realtime.models import Topic
        from realtime.wire import defer_autobahn_config_log, share_autobahn_options

        post_save.connect(topics.forget, sender=Topic, dispatch_uid="realtime.topics.save")
        post_delete.connect(topics.forget, sender=Topic, dispatch_uid="realtime.topics.delete")
        access.connect_signals()
        autodiscover()  # feeds
        # Each app's realtime.py (families, model broadcasts), as the admin finds admin.py.
        autodiscover_modules("realtime")
        defer_autobahn_config_log()
        share_autobahn_options()
