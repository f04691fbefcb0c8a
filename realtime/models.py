"""Topics and their messages: the durable truth behind every frame."""

from __future__ import annotations

from typing import Any

from django.conf import settings
from django.contrib.auth.models import Group
from django.core.exceptions import ValidationError
from django.core.validators import MaxValueValidator, MinValueValidator, RegexValidator
from django.db import models
from django.utils import timezone

from realtime import families
from realtime.conf import realtime_settings
from realtime.protocol import SLUG_PATTERN

validate_topic_slug = RegexValidator(
    SLUG_PATTERN,
    "A topic slug is 1-80 characters: lowercase letters, digits, '-' and '_', "
    "starting with a letter or digit.",
)


def default_backlog() -> int:
    return realtime_settings.DEFAULT_BACKLOG


def default_retention() -> int:
    return int(realtime_settings.DEFAULT_RETENTION)


class TopicQuerySet(models.QuerySet["Topic"]):
    def enabled(self) -> TopicQuerySet:
        return self.filter(enabled=True)

    def latest_seq(self, topic_id: int) -> int:
        """The topic's latest seq (0 when it has none or does not exist)."""
        return self.filter(pk=topic_id).values_list("last_seq", flat=True).first() or 0

    def heads(self, slugs: list[str]) -> dict[str, int]:
        """Latest seq of each of these topics, by slug."""
        return dict(self.filter(slug__in=slugs).values_list("slug", "last_seq"))

    def readable_by(self, user: Any) -> TopicQuerySet:
        """Enabled topics ``user`` may read: public ones, and private ones it is let into
        (staff always; other signed-in users when the topic names no groups or one of
        theirs). The one statement of the read rule; ``Topic.can_read`` asks it."""
        qs = self.enabled().filter(family="")  # a family's topics: its rules (Topic.can_read)
        if user is None or not user.is_authenticated:
            return qs.filter(private=False)
        if user.is_staff or user.is_superuser:
            return qs
        return qs.filter(
            models.Q(private=False)
            | models.Q(groups__isnull=True)
            | models.Q(groups__in=user.groups.all())
        ).distinct()


class TopicKind(models.TextChoices):
    STREAM = "stream", "stream"
    STATE = "state", "state"


class Topic(models.Model):
    """A named stream of messages that visitors subscribe to."""

    # A slug, or ``family:key`` for a family's topic (made by the first publish, never typed).
    slug = models.CharField(max_length=200, unique=True, validators=[validate_topic_slug])
    family = models.CharField(
        max_length=80,
        blank=True,
        default="",
        editable=False,
        db_index=True,
        help_text="The family of a family:key topic (declared in code); empty for a slug topic.",
    )
    title = models.CharField(max_length=200, blank=True)
    description = models.TextField(blank=True)
    private = models.BooleanField(
        default=False,
        help_text="Private topics are read only by signed-in users (in the groups below, if any).",
    )
    groups = models.ManyToManyField(
        Group,
        blank=True,
        related_name="realtime_topics",
        help_text="For a private topic: groups whose members may read it. None = any signed-in "
        "user. Staff may always read.",
    )
    visitor_publish = models.BooleanField(
        default=False, help_text="Visitors who may read the topic may also publish to it."
    )
    backlog = models.PositiveIntegerField(
        default=default_backlog,
        validators=[MaxValueValidator(10_000)],
        help_text="Messages a new subscriber receives first.",
    )
    retention = models.PositiveIntegerField(
        default=default_retention,
        validators=[MinValueValidator(1), MaxValueValidator(10_000_000)],
        help_text="Messages kept for clients that resume; older ones are pruned.",
    )
    kind = models.CharField(
        max_length=10,
        choices=TopicKind.choices,
        default=TopicKind.STREAM,
        help_text="Stream: every message once, in order (news, chat). State: only the latest "
        "message matters (a clock, figures, a score): a subscriber gets the latest, never a "
        "replay, and one that falls behind skips to the newest.",
    )
    presence = models.BooleanField(
        default=False,
        help_text="Subscribers who ask may see who else is here (signed-in users by name).",
    )
    whispers = models.BooleanField(
        default=False,
        help_text="Readers may send each other whispers (typing indicators): not stored.",
    )
    enabled = models.BooleanField(default=True)
    last_seq = models.PositiveBigIntegerField(default=0, editable=False)
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)

    objects = TopicQuerySet.as_manager()

    class Meta:
        ordering = ["slug"]

    def __str__(self) -> str:
        return self.title or self.slug

    def get_absolute_url(self) -> str:
        from django.urls import reverse

        return reverse("realtime:topic", args=[self.slug])

    @property
    def is_state(self) -> bool:
        return self.kind == TopicKind.STATE

    @classmethod
    def unsaved(cls, slug: str) -> Topic | None:
        """The row a declared family's topic would have before its first publish (not
        stored: seq 0); None for slugs and unknown families."""
        found = families.of(slug)
        if found is None:
            return None
        family, _ = found
        topic = cls(slug=slug, family=family.name, kind=family.kind, title=family.title)
        if family.backlog is not None:
            topic.backlog = family.backlog
        if family.retention is not None:
            topic.retention = family.retention
        topic.presence, topic.whispers = family.presence, family.whispers
        return topic

    @property
    def key(self) -> str:
        """The key of a family topic (``orders:42`` → ``42``); "" for a slug topic."""
        return self.slug.partition(":")[2] if self.family else ""

    @property
    def declared_family(self) -> families.Family | None:
        """The family that owns this topic's rules (None for slug topics, or when the code that
        declared it is gone: then nobody may read it)."""
        return families.get(self.family) if self.family else None

    def _family_may(self, action: str, user: Any) -> bool:
        """A family topic's rule for ``action``: nobody may when its family is gone."""
        found = self.declared_family
        return found is not None and self.enabled and found.may(action, user, self.key)

    def allows(self, action: str, user: Any) -> bool:
        """``whisper`` or ``presence`` for ``user`` (who may read the topic)."""
        if self.family:
            return self._family_may(action, user)
        flag = self.whispers if action == "whisper" else self.presence
        return flag and self.can_read(user)

    def clean(self) -> None:
        if self.backlog is not None and self.retention is not None:
            if self.backlog > self.retention:
                raise ValidationError(
                    {
                        "backlog": f"The backlog ({self.backlog}) cannot exceed the retention "
                        f"({self.retention})."
                    }
                )

    def can_read(self, user: Any) -> bool:
        """Whether ``user`` may read this (enabled) topic: no query for public topics, one for
        private ones (``TopicQuerySet.readable_by`` states the rule)."""
        if self.family:
            return self._family_may("read", user)
        if not self.private:
            return self.enabled
        if user is None or not user.is_authenticated:
            return False
        return Topic.objects.readable_by(user).filter(pk=self.pk).exists()

    def can_publish(self, user: Any = None, *, token: ApiToken | None = None) -> bool:
        """The publish rule, the one statement the socket, the HTTP API and the admin ask: an
        API token publishes to the enabled topics it names (every one when it names none);
        anyone else (a visitor, signed in or not) to an enabled topic that allows visitors
        and that they may read. Editors publish through the admin's own permissions. No
        query for public topics and visitors; one for private topics or tokens."""
        if not self.enabled:
            return False
        if token is not None:
            scoped = list(token.topics.values_list("pk", flat=True))
            named = token.family_names
            if not scoped and not named:
                return token.active
            return token.active and (self.pk in scoped or self.family in named)
        if self.family:
            return self._family_may("publish", user)
        return self.visitor_publish and self.can_read(user)


class Source(models.TextChoices):
    ADMIN = "admin"
    COMMAND = "command"
    FEED = "feed"
    VISITOR = "visitor"
    API = "api"


class MessageQuerySet(models.QuerySet["Message"]):
    def page(self, topic_id: int, after: int, upto: int, size: int) -> MessageQuerySet:
        """(seq, created_at, data, html) of the retained messages with ``after < seq <=
        upto``, in order, at most ``size``: what a frame needs, without model instances."""
        return (
            self.filter(topic_id=topic_id, seq__gt=after, seq__lte=upto)
            .order_by("seq")
            .values_list("seq", "created_at", "data", "html")[:size]
        )


class Message(models.Model):
    """One message of a topic; ``seq`` is 1, 2, 3... per topic, allocated on insert."""

    topic = models.ForeignKey(Topic, on_delete=models.CASCADE, related_name="messages")
    seq = models.PositiveBigIntegerField(editable=False)
    data = models.JSONField()
    # The topic template's rendering (realtime/rendering.py), made once when it was stored.
    html = models.TextField(blank=True, default="", editable=False)
    created_at = models.DateTimeField(default=timezone.now, editable=False, db_index=True)
    source = models.CharField(max_length=16, choices=Source.choices, default=Source.API)
    # Who sent it, beyond ``source``: ``token:<name>`` for the HTTP API.
    origin = models.CharField(max_length=120, blank=True, default="", editable=False)
    author = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL
    )
    fanned_out_at = models.DateTimeField(null=True, blank=True, editable=False)

    objects = MessageQuerySet.as_manager()

    class Meta:
        ordering = ["topic", "seq"]
        constraints = [
            models.UniqueConstraint(fields=["topic", "seq"], name="realtime_message_topic_seq")
        ]
        indexes = [
            models.Index(
                fields=["created_at"],
                name="realtime_message_outbox",
                condition=models.Q(fanned_out_at__isnull=True),
            )
        ]

    def __str__(self) -> str:
        return f"{self.topic.slug}#{self.seq}"


class IdempotentPublish(models.Model):
    """A publish made with an idempotency key: the same key from the same scope (a user, a
    session, an API token) within ``realtime.idempotency.WINDOW`` gets this answer again and
    stores nothing new."""

    scope = models.CharField(max_length=200)
    key = models.CharField(max_length=100)
    topic = models.ForeignKey(Topic, on_delete=models.CASCADE, related_name="+")
    seq = models.PositiveBigIntegerField()
    created_at = models.DateTimeField(default=timezone.now, db_index=True)

    class Meta:
        constraints = [
            models.UniqueConstraint(fields=["scope", "key"], name="realtime_idempotent_scope_key")
        ]

    def __str__(self) -> str:
        return f"{self.scope} {self.key} → {self.topic_id}#{self.seq}"


class ApiToken(models.Model):
    """A bearer token of the HTTP publish API. Only a hash of the token is stored; the token
    itself is shown once, when it is made (``manage.py tokens add``, the admin)."""

    name = models.CharField(max_length=100, unique=True)
    prefix = models.CharField(max_length=12, editable=False, help_text="The token's start.")
    token_hash = models.CharField(max_length=64, unique=True, editable=False)
    topics = models.ManyToManyField(
        Topic,
        blank=True,
        related_name="api_tokens",
        help_text="Topics it may publish to. None here and no families: every topic.",
    )
    families = models.CharField(
        max_length=400,
        blank=True,
        default="",
        help_text="Families (space-separated) to whose topics it may publish, e.g. 'orders'.",
    )
    created_at = models.DateTimeField(default=timezone.now, editable=False)
    last_used_at = models.DateTimeField(null=True, blank=True, editable=False)
    revoked_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["name"]
        verbose_name = "API token"

    def __str__(self) -> str:
        return self.name

    @property
    def active(self) -> bool:
        return self.revoked_at is None

    @property
    def family_names(self) -> set[str]:
        return set(self.families.split())

    def clean(self) -> None:
        unknown = sorted(name for name in self.family_names if families.get(name) is None)
        if unknown:
            declared = ", ".join(f.name for f in families.all_families())
            raise ValidationError(
                {"families": f"No family {', '.join(unknown)}; declared: {declared}."}
            )
