from django.apps import AppConfig


class RealtimeConfig(AppConfig):
    name = "realtime"
    verbose_name = "Real-time topics"
    default_auto_field = "django.db.models.BigAutoField"

    def ready(self) -> None:
        from django.db.models.signals import post_delete, post_save

        from realtime import access, checks, topics  # noqa: F401  (checks registers itself)
        from realtime.feeds import autodiscover
        from realtime.models import Topic
        from realtime.wire import defer_autobahn_config_log

        post_save.connect(topics.forget, sender=Topic, dispatch_uid="realtime.topics.save")
        post_delete.connect(topics.forget, sender=Topic, dispatch_uid="realtime.topics.delete")
        access.connect_signals()
        autodiscover()
        defer_autobahn_config_log()
