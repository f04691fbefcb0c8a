"""Admin for editors: topics with their recent messages, and a message form that publishes."""

from __future__ import annotations

import json
from typing import Any

from django import forms
from django.contrib import admin, messages
from django.db.models import Count
from django.utils import timezone
from django.utils.html import format_html, format_html_join

from realtime import fanout, payload
from realtime.exceptions import InvalidMessage, TopicNotFound
from realtime.models import ApiToken, Message, Source, Topic
from realtime.outbox import publish

RECENT = 10


def preview(data: Any, limit: int = 300) -> str:
    """Message data as JSON text for a page; data stored before it was checked at every
    entry (lone surrogates) is shown repaired instead of breaking the page."""
    return payload.dumps(payload.sendable(data)[0])[:limit]


class DataField(forms.JSONField):
    """A JSON field that shows refused input (lone surrogates) as escapes when the form is
    displayed again, instead of failing to encode the page."""

    def prepare_value(self, value: Any) -> str:
        text = super().prepare_value(value)
        try:
            text.encode("utf-8")
        except UnicodeEncodeError:
            return json.dumps(value, ensure_ascii=True)
        return text


class MessageForm(forms.ModelForm):
    """The admin's "Add message": data is checked like every other entry point."""

    data = DataField(
        initial=dict,
        help_text='JSON. For example, on news: {"title": "Hello", "body": "The site is live."}; '
        'on chat: {"text": "Hi"}. It is shown rendered by the topic\'s template '
        "(realtime/messages/SLUG.html) and sent to every subscriber when you save.",
    )

    class Meta:
        model = Message
        fields = ("topic", "data")

    def clean_data(self) -> Any:
        data = self.cleaned_data.get("data")
        reason = payload.problem(data)
        if reason is not None:
            raise forms.ValidationError(reason, code="invalid")
        return data


@admin.register(Topic)
class TopicAdmin(admin.ModelAdmin):
    list_display = (
        "slug",
        "title",
        "family",
        "kind",
        "private",
        "visitor_publish",
        "enabled",
        "last_seq",
        "message_count",
        "watching",
        "backlog",
        "retention",
    )
    list_filter = ("family", "kind", "enabled", "private", "visitor_publish", "presence", "groups")
    search_fields = ("slug", "title", "description")
    filter_horizontal = ("groups",)
    actions = ("send_test_message",)
    change_form_template = "admin/realtime/topic/change_form.html"
    readonly_fields = ("last_seq", "created_at", "updated_at", "recent_messages")
    fieldsets = (
        (None, {"fields": ("slug", "title", "description", "enabled")}),
        ("Access", {"fields": ("private", "groups", "visitor_publish", "presence", "whispers")}),
        ("Delivery", {"fields": ("kind", "backlog", "retention", "last_seq")}),
        ("Recent messages", {"fields": ("recent_messages",)}),
        ("Dates", {"fields": ("created_at", "updated_at"), "classes": ("collapse",)}),
    )

    def get_queryset(self, request):
        return super().get_queryset(request).annotate(_message_count=Count("messages"))

    def get_readonly_fields(self, request, obj=None):
        # A family's topic is named and ruled by code (its family's rules, not these fields).
        if obj is not None and obj.family:
            return (
                *self.readonly_fields,
                "slug",
                "private",
                "groups",
                "visitor_publish",
                "presence",
                "whispers",
                "kind",
            )
        return self.readonly_fields

    def get_fieldsets(self, request, obj=None):
        if obj is not None and obj.family:
            return (
                (None, {"fields": ("slug", "family", "title", "description", "enabled")}),
                ("Delivery", {"fields": ("kind", "backlog", "retention", "last_seq")}),
                ("Recent messages", {"fields": ("recent_messages",)}),
            )
        return super().get_fieldsets(request, obj)

    def changelist_view(self, request, extra_context=None):
        try:  # one Redis scan for the whole list, not one per row
            self._watching = fanout.subscriber_counts()
        except Exception:  # Redis away: the list still works
            self._watching = None
        extra_context = {**(extra_context or {}), "status_url": "status/"}
        return super().changelist_view(request, extra_context)

    @admin.display(description="watching now")
    def watching(self, obj: Topic) -> str:
        counts = getattr(self, "_watching", None)
        value = "?" if counts is None else counts.get(obj.slug, 0)
        return format_html('<span class="watching" data-watching="{}">{}</span>', obj.slug, value)

    def get_urls(self):
        from django.urls import path

        own = [
            path("status/", self.admin_site.admin_view(self.status_view), name="realtime_status"),
            path(
                "status.json",
                self.admin_site.admin_view(self.status_json),
                name="realtime_status_json",
            ),
            path(
                "presence.json",
                self.admin_site.admin_view(self.presence_json),
                name="realtime_presence_json",
            ),
        ]
        return own + super().get_urls()

    def status_view(self, request):
        from django.template.response import TemplateResponse

        context = {
            **self.admin_site.each_context(request),
            "title": "Realtime status",
            "opts": self.model._meta,
            "snapshot": status_snapshot(),
        }
        return TemplateResponse(request, "admin/realtime/status.html", context)

    def status_json(self, request):
        from django.http import JsonResponse

        return JsonResponse(status_snapshot())

    def presence_json(self, request):
        from django.http import JsonResponse

        try:
            return JsonResponse({"topics": fanout.subscriber_counts()})
        except Exception as exc:
            return JsonResponse({"error": f"Redis: {exc}"}, status=503)

    def change_view(self, request, object_id, form_url="", extra_context=None):
        extra_context = dict(extra_context or {})
        topic = self.get_object(request, object_id)
        if topic is not None:
            try:
                extra_context["subscriber_count"] = fanout.subscriber_count(topic.slug)
            except Exception:  # Redis away: the page still works
                extra_context["subscriber_count"] = None
            declared = topic.declared_family
            if declared.presence if declared is not None else topic.presence:
                try:
                    members, count = fanout.presence_of(topic.slug)
                except Exception:
                    members, count = None, None
                extra_context["presence_members"] = members
                extra_context["presence_count"] = count
        return super().change_view(request, object_id, form_url, extra_context)

    @admin.action(description="Send a test message to the selected topics")
    def send_test_message(self, request, queryset):
        sent = []
        for topic in queryset:
            if not topic.enabled:
                self.message_user(
                    request, f"Topic {topic.slug} is disabled: skipped.", messages.WARNING
                )
                continue
            message = publish(
                topic,
                {"test": True, "by": request.user.get_username(), "at": timezone.now().isoformat()},
                source=Source.ADMIN,
                user=request.user,
            )
            sent.append(f"{topic.slug}#{message.seq}")
        if sent:
            self.message_user(request, f"Test message sent: {', '.join(sent)}.", messages.SUCCESS)

    @admin.display(description="messages", ordering="_message_count")
    def message_count(self, obj: Topic) -> int:
        return obj._message_count

    @admin.display(description=f"Latest {RECENT}")
    def recent_messages(self, obj: Topic) -> str:
        if obj.pk is None:
            return "-"
        rows = obj.messages.select_related("author").order_by("-seq")[:RECENT]
        if not rows:
            return "No messages yet."
        body = format_html_join(
            "",
            "<tr><td>{}</td><td>{}</td><td>{}</td><td><code>{}</code></td></tr>",
            (
                (
                    m.seq,
                    time_html(m.created_at),
                    m.source,
                    preview(m.data),
                )
                for m in rows
            ),
        )
        return format_html(
            "<table><thead><tr><th>seq</th><th>created</th><th>source</th><th>data</th></tr>"
            "</thead><tbody>{}</tbody></table>",
            body,
        )


def time_html(moment: Any) -> str:
    """A time as every page writes it: ``<time datetime>`` in UTC, shown in the visitor's
    time zone by the pages' script (admin pages load it too), so tables and live panels
    agree."""
    return format_html(
        '<time datetime="{}">{}</time>', moment.isoformat(), moment.strftime("%Y-%m-%d %H:%M:%S")
    )


def status_snapshot() -> dict[str, Any]:
    """What the "Realtime status" page shows: every live server process (from Redis), what
    the database holds and the scheduler's last tick. Counters are cumulative; the page turns
    them into rates."""
    from datetime import timedelta

    now = timezone.now()
    snapshot: dict[str, Any] = {"time": now.isoformat()}
    try:
        processes = fanout.hub_stats()
        tick = fanout.last_tick()
        snapshot["redis"] = "ok"
    except Exception as exc:
        processes, tick = [], None
        snapshot["redis"] = f"unreachable: {type(exc).__name__}"
    snapshot["processes"] = processes
    snapshot["totals"] = {
        name: sum(p[name] for p in processes) for name in ("connections", "subscriptions", "frames")
    }
    snapshot["published_last_10s"] = Message.objects.filter(
        created_at__gte=now - timedelta(seconds=10)
    ).count()
    snapshot["outbox_pending"] = Message.objects.filter(fanned_out_at__isnull=True).count()
    snapshot["scheduler"] = tick
    return snapshot


@admin.register(Message)
class MessageAdmin(admin.ModelAdmin):
    """Messages are immutable once published: add goes through ``publish()``, no edits."""

    list_display = (
        "__str__",
        "topic",
        "seq",
        "source",
        "data_preview",
        "author",
        "created",
        "delivered",
    )
    ordering = ("-pk",)  # newest first
    list_filter = ("source", "topic", ("fanned_out_at", admin.EmptyFieldListFilter))
    search_fields = ("topic__slug", "data")
    list_select_related = ("topic", "author")
    date_hierarchy = "created_at"
    fields = ("topic", "data")
    form = MessageForm
    autocomplete_fields = ()

    @admin.display(description="created", ordering="created_at")
    def created(self, obj: Message) -> str:
        return time_html(obj.created_at)

    @admin.display(boolean=True, description="fanned out")
    def delivered(self, obj: Message) -> bool:
        return obj.fanned_out_at is not None

    @admin.display(description="data")
    def data_json(self, obj: Message) -> str:
        return preview(obj.data, limit=10_000)

    @admin.display(description="data")
    def data_preview(self, obj: Message) -> str:
        text = preview(obj.data, limit=90)
        return format_html("<code>{}</code>", text + ("…" if len(text) >= 90 else ""))

    @admin.display(description="as visitors see it")
    def rendered(self, obj: Message) -> str:
        from django.utils.safestring import mark_safe

        if not obj.html:
            return "(no rendering: stored before templates, or its template failed)"
        # Rendered by the topic's template with autoescaping when it was stored.
        return mark_safe(f'<div class="realtime-rendered">{obj.html}</div>')  # noqa: S308

    def get_readonly_fields(self, request, obj=None):
        if obj is not None:
            return (
                "topic",
                "seq",
                "rendered",
                "data_json",
                "source",
                "origin",
                "author",
                "created_at",
                "fanned_out_at",
            )
        return ()

    def get_fields(self, request, obj=None):
        return self.get_readonly_fields(request, obj) or self.fields

    change_form_template = "admin/realtime/message/change_form.html"

    def get_urls(self):
        from django.urls import path

        preview = path(
            "preview/",
            self.admin_site.admin_view(self.preview_view),
            name="realtime_message_preview",
        )
        return [preview, *super().get_urls()]

    def preview_view(self, request):
        """Render data with a topic's template without storing it (the Add page's preview)."""
        from django.http import JsonResponse

        if request.method != "POST":
            return JsonResponse({"error": "POST topic and data"}, status=405)
        topic = Topic.objects.filter(pk=request.POST.get("topic") or None).first()
        if topic is None:
            return JsonResponse({"error": "Choose a topic to see the preview."}, status=400)
        try:
            data = json.loads(request.POST.get("data", ""))
        except ValueError as exc:
            return JsonResponse({"error": f"Not JSON yet: {exc}"}, status=400)
        reason = payload.problem(data)
        if reason is not None:
            return JsonResponse({"error": reason}, status=400)
        from realtime import rendering

        draft = Message(topic=topic, seq=topic.last_seq + 1, data=data, author=request.user)
        html = rendering.render(draft)
        return JsonResponse({"html": html, "template": rendering.template_names(topic.slug)})

    def get_changeform_initial_data(self, request):
        # An empty object to fill in (the model's default would show "null").
        return {"data": {}, **super().get_changeform_initial_data(request)}

    def formfield_for_foreignkey(self, db_field, request, **kwargs):
        if db_field.name == "topic":
            kwargs["queryset"] = Topic.objects.enabled()
        return super().formfield_for_foreignkey(db_field, request, **kwargs)

    def has_change_permission(self, request, obj=None):
        return False  # view only: a published message cannot be changed

    def has_delete_permission(self, request, obj=None):
        return False  # deleting would leave a gap in the topic's sequence

    def save_model(self, request: Any, obj: Message, form: Any, change: bool) -> None:
        stored = publish(obj.topic, obj.data, source=Source.ADMIN, user=request.user)
        # Hand the stored row back to the admin (for its log entry and redirect).
        obj.__dict__.update({k: v for k, v in stored.__dict__.items() if k != "_state"})
        obj._state.adding = False

    def add_view(self, request, form_url="", extra_context=None):
        try:
            return super().add_view(request, form_url, extra_context)
        except (TopicNotFound, InvalidMessage) as exc:
            self.message_user(request, f"Not published: {exc}", messages.ERROR)
            from django.http import HttpResponseRedirect

            return HttpResponseRedirect(request.path)


@admin.register(ApiToken)
class ApiTokenAdmin(admin.ModelAdmin):
    """Tokens of the HTTP publish API. A new token's secret is shown once, in a message."""

    list_display = ("name", "prefix", "topic_list", "created_at", "last_used_at", "active")
    readonly_fields = ("prefix", "created_at", "last_used_at")
    fields = ("name", "topics", "families", "revoked_at", "prefix", "created_at", "last_used_at")
    filter_horizontal = ("topics",)
    search_fields = ("name",)

    @admin.display(description="topics")
    def topic_list(self, obj):
        named = [t.slug for t in obj.topics.all()] + [f"{f}:*" for f in sorted(obj.family_names)]
        return ", ".join(named) or "every topic"

    @admin.display(boolean=True)
    def active(self, obj):
        return obj.active

    def save_model(self, request, obj, form, change):
        if not change:
            from realtime import tokens

            secret = tokens.new_secret()
            obj.prefix, obj.token_hash = secret[:10], tokens.digest(secret)
            self.message_user(
                request,
                f"The token of {obj.name!r} is {secret} — copy it now, it is not shown again.",
                messages.WARNING,
            )
        super().save_model(request, obj, form, change)


# --- notifications: an action on the site's users ------------------------------------------------


class NotifyForm(forms.Form):
    text = forms.CharField(
        max_length=1000,
        widget=forms.Textarea(attrs={"rows": 3}),
        help_text="Shown in their notifications bell (user:<id>), live if they are on the site.",
    )


@admin.action(description="Send a notification to the selected users")
def notify_users(modeladmin: Any, request: Any, queryset: Any) -> Any:
    """An intermediate page asks for the text; each selected user gets it on ``user:<pk>``."""
    from django.template.response import TemplateResponse

    import realtime

    form = NotifyForm(request.POST if "apply" in request.POST else None)
    if form.is_valid():
        data = {"text": form.cleaned_data["text"], "from": request.user.get_username()}
        users = [user for user in queryset if user.is_active]
        for user in users:
            realtime.notify(user, data, source=Source.ADMIN)
        modeladmin.message_user(
            request, f"Notification sent to {len(users)} user(s).", messages.SUCCESS
        )
        return None
    context = {
        **modeladmin.admin_site.each_context(request),
        "title": "Send a notification",
        "opts": modeladmin.model._meta,
        "users": queryset,
        "form": form,
        "action": "notify_users",
        "action_checkbox_name": admin.helpers.ACTION_CHECKBOX_NAME,
    }
    return TemplateResponse(request, "admin/realtime/notify.html", context)


def _add_notify_action() -> None:
    from django.contrib.auth import get_user_model

    user_model = get_user_model()
    if not admin.site.is_registered(user_model):
        return
    current = type(admin.site._registry[user_model])
    admin.site.unregister(user_model)
    actions = (*(current.actions or ()), notify_users)
    admin.site.register(user_model, type("UserAdmin", (current,), {"actions": actions}))


_add_notify_action()
