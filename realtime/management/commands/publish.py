import json
import sys

from django.core.management.base import BaseCommand, CommandError

from realtime.exceptions import InvalidMessage, TopicNotFound
from realtime.models import Source
from realtime.outbox import publish


class Command(BaseCommand):
    stealth_options = ("stdin",)
    help = "Publish a message: publish SLUG JSON ('-' reads the JSON from stdin). Prints its seq."

    def add_arguments(self, parser):
        parser.add_argument("slug")
        parser.add_argument("json", help="The message data as JSON, or - to read it from stdin.")

    def handle(self, *args, slug, json: str, **options):
        text = (options.get("stdin") or sys.stdin).read() if json == "-" else json
        try:
            data = _loads(text)
        except ValueError as exc:
            raise CommandError(f"The message is not valid JSON: {exc}") from None
        try:
            message = publish(slug, data, source=Source.COMMAND)
        except TopicNotFound as exc:
            raise CommandError(f"{exc} List topics with: manage.py topics") from None
        except InvalidMessage as exc:
            raise CommandError(str(exc)) from None
        self.stdout.write(str(message.seq))


def _loads(text: str):
    def refuse_constant(name: str):
        raise ValueError(f"{name} is not allowed")

    return json.loads(text, parse_constant=refuse_constant)
