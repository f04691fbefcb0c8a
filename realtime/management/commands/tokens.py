from django.core.management.base import BaseCommand, CommandError

from realtime import tokens
from realtime.models import ApiToken


class Command(BaseCommand):
    help = (
        "Tokens of the HTTP publish API: tokens add NAME [--topic SLUG ...] [--family NAME ...] "
        "(prints the token "
        "once, as the last line), tokens list, tokens revoke NAME."
    )

    def add_arguments(self, parser):
        sub = parser.add_subparsers(dest="action", title="actions", required=True)
        add = sub.add_parser("add", help="Make a token; its secret is printed once.")
        add.add_argument("name")
        add.add_argument(
            "--topic",
            action="append",
            default=[],
            metavar="SLUG",
            help="A topic it may publish to (repeat for several; none: every topic).",
        )
        add.add_argument(
            "--family",
            action="append",
            default=[],
            metavar="NAME",
            help="A family to whose topics (NAME:key) it may publish (repeat for several).",
        )
        sub.add_parser("list", help="List tokens (never their secrets).")
        revoke = sub.add_parser("revoke", help="Revoke a token by name.")
        revoke.add_argument("name")

    def handle(self, *args, action=None, **options):
        if action == "add":
            try:
                token, secret = tokens.create(options["name"], options["topic"], options["family"])
            except ValueError as exc:
                raise CommandError(str(exc)) from None
            named = options["topic"] + [f"{f}:*" for f in options["family"]]
            scope = ", ".join(named) or "every topic"
            self.stderr.write(f"Token {token.name!r} for {scope}; keep it, it is not shown again:")
            self.stdout.write(secret)
        elif action == "revoke":
            try:
                token = tokens.revoke(options["name"])
            except ApiToken.DoesNotExist:
                raise CommandError(f"No token named {options['name']!r}.") from None
            self.stdout.write(f"Revoked {token.name}.")
        else:
            self.list()

    def list(self):
        rows = [("NAME", "STARTS", "TOPICS", "CREATED", "LAST USED", "STATE")]
        for token in ApiToken.objects.prefetch_related("topics"):
            rows.append(
                (
                    token.name,
                    token.prefix + "…",
                    ",".join(
                        [t.slug for t in token.topics.all()]
                        + [f"{f}:*" for f in sorted(token.family_names)]
                    )
                    or "*",
                    token.created_at.strftime("%Y-%m-%d %H:%M"),
                    token.last_used_at.strftime("%Y-%m-%d %H:%M") if token.last_used_at else "-",
                    "active" if token.active else "revoked",
                )
            )
        if len(rows) == 1:
            self.stdout.write("(no tokens; add one with: manage.py tokens add NAME)")
            return
        widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
        for row in rows:
            self.stdout.write(
                "  ".join(v.ljust(w) for v, w in zip(row, widths, strict=True)).rstrip()
            )
