import secrets

from django.contrib.auth import get_user_model
from django.contrib.auth.models import Group
from django.core.management.base import BaseCommand

from realtime.models import Topic
from realtime.outbox import publish

DEMO_TOPICS = [
    {"slug": "news", "title": "News", "description": "Announcements from the editors."},
    {
        "slug": "clock",
        "title": "Clock",
        "description": "The server's time, every 5 seconds.",
        "kind": "state",
    },
    {
        "slug": "site-stats",
        "title": "Site statistics",
        "description": "Counts from the database, when they change.",
        "kind": "state",
    },
    {
        "slug": "chat",
        "title": "Chat",
        "description": "Anyone may write here; see who is here and who is typing.",
        "visitor_publish": True,
        "presence": True,
        "whispers": True,
    },
    {
        "slug": "staff-room",
        "title": "Staff room",
        "description": "Private: members only.",
        "private": True,
    },
]


class Command(BaseCommand):
    help = "Create the demo topics and, with --admin, an admin account (idempotent)."

    def add_arguments(self, parser):
        parser.add_argument(
            "--admin",
            metavar="USERNAME",
            help="Create (or reset the password of) this superuser and print it.",
        )
        parser.add_argument("--password", help="The admin password (default: a random one).")

    def handle(self, *args, admin=None, password=None, **options):
        members, _ = Group.objects.get_or_create(name="members")
        for spec in DEMO_TOPICS:
            topic, created = Topic.objects.get_or_create(slug=spec["slug"], defaults=spec)
            if spec.get("private"):
                topic.groups.add(members)
            if created:
                self.stdout.write(f"created topic {topic.slug}")
                if topic.slug == "news":
                    publish(
                        topic, {"title": "Welcome", "body": "The site is live."}, source="command"
                    )
        from django.apps import apps

        if apps.is_installed("demo"):  # the status board's services
            from demo.seed import seed

            for line in seed():
                self.stdout.write(line)
        if admin:
            password = password or secrets.token_urlsafe(12)
            user, _ = get_user_model().objects.get_or_create(username=admin)
            user.is_staff = user.is_superuser = True
            user.set_password(password)
            user.save()
            self.stdout.write(f"admin user: {admin}  password: {password}")
