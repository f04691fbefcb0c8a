from django.core.exceptions import ValidationError
from django.core.management.base import BaseCommand, CommandError
from django.db.models import Count

from realtime.models import Topic


class Command(BaseCommand):
    help = "List topics, or add one: topics add SLUG [--title T] [--private] ..."

    def add_arguments(self, parser):
        sub = parser.add_subparsers(dest="action", title="actions")
        sub.add_parser("list", help="List topics (the default).")
        add = sub.add_parser("add", help="Add a topic.")
        add.add_argument("slug")
        add.add_argument("--title", default="")
        add.add_argument("--description", default="")
        add.add_argument("--private", action="store_true", help="Only signed-in users may read.")
        add.add_argument(
            "--visitor-publish",
            action="store_true",
            help="Visitors who may read it may publish to it.",
        )
        add.add_argument(
            "--kind",
            default="stream",
            help="stream (every message, in order; the default) or state (only the latest).",
        )
        add.add_argument(
            "--presence", action="store_true", help="Subscribers may see who else is here."
        )
        add.add_argument(
            "--whispers",
            action="store_true",
            help="Readers may whisper to each other (typing indicators; not stored).",
        )
        add.add_argument("--backlog", type=int, help="Messages a new subscriber gets first.")
        add.add_argument("--retain", type=int, help="Messages kept for clients that resume.")

    def handle(self, *args, action=None, **options):
        if action == "add":
            self.add(options)
        else:
            self.list()

    def list(self):
        topics = Topic.objects.annotate(count=Count("messages")).order_by("slug")
        rows = [("SLUG", "KIND", "VISIBILITY", "PUBLISH", "ENABLED", "LAST SEQ", "MESSAGES")]
        for t in topics:
            rows.append(
                (
                    t.slug,
                    t.kind,
                    "private" if t.private else "public",
                    "visitors" if t.visitor_publish else "staff",
                    "yes" if t.enabled else "no",
                    str(t.last_seq),
                    str(t.count),
                )
            )
        widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
        for row in rows:
            self.stdout.write(
                "  ".join(v.ljust(w) for v, w in zip(row, widths, strict=False)).rstrip()
            )
        if len(rows) == 1:
            self.stdout.write("(no topics; add one with: manage.py topics add SLUG)")

    def add(self, options):
        topic = Topic(
            slug=options["slug"],
            title=options["title"],
            description=options["description"],
            private=options["private"],
            visitor_publish=options["visitor_publish"],
            kind=options["kind"],
            presence=options["presence"],
            whispers=options["whispers"],
        )
        if options["backlog"] is not None:
            topic.backlog = options["backlog"]
        if options["retain"] is not None:
            topic.retention = options["retain"]
        try:
            topic.full_clean()
        except ValidationError as exc:
            problems = "; ".join(
                f"{field}: {' '.join(msgs)}" for field, msgs in exc.message_dict.items()
            )
            raise CommandError(f"Cannot add topic {options['slug']!r}: {problems}") from None
        topic.save()
        self.stdout.write(self.style.SUCCESS(f"Added topic {topic.slug}."))
