from django.contrib.auth import get_user_model
from django.core.management.base import BaseCommand, CommandError

import realtime
from realtime.exceptions import InvalidMessage
from realtime.management.commands.publish import _loads
from realtime.models import Source


class Command(BaseCommand):
    help = (
        "Send a notification to a user's own topic (user:<id>, their bell): "
        'notify USERNAME --data \'{"text": "..."}\'. Prints its seq.'
    )

    def add_arguments(self, parser):
        parser.add_argument("username")
        parser.add_argument(
            "--data", required=True, help='The notification as JSON, e.g. {"text": "Hello"}.'
        )

    def handle(self, *args, username: str, data: str, **options):
        user_model = get_user_model()
        user = user_model._default_manager.filter(**{user_model.USERNAME_FIELD: username}).first()
        if user is None:
            raise CommandError(f"No user {username!r}. List them in the admin.")
        if not user.is_active:
            raise CommandError(f"User {username!r} is inactive: they cannot read notifications.")
        try:
            value = _loads(data)
        except ValueError as exc:
            raise CommandError(f"--data is not valid JSON: {exc}") from None
        try:
            message = realtime.notify(user, value, source=Source.COMMAND)
        except InvalidMessage as exc:
            raise CommandError(str(exc)) from None
        self.stdout.write(f"{message.topic.slug} {message.seq}")
