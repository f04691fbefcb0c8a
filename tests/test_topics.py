"""realtime.topics: what connections read. Rows cached per process (and forgotten when saved),
private topics answered like missing ones, the publish rule off the event loop, pages, heads."""

from __future__ import annotations

import pytest
from channels.db import database_sync_to_async
from django.contrib.auth.models import AnonymousUser

from realtime import protocol, topics
from realtime.models import Topic
from realtime.outbox import publish

pytestmark = pytest.mark.django_db(transaction=True)


@database_sync_to_async
def make(slug: str, **fields) -> Topic:
    return Topic.objects.create(slug=slug, title=slug, **fields)


async def test_access_finds_public_topics_and_hides_private_ones_like_missing_ones():
    await make("news")
    await make("secret", private=True)
    anonymous = AnonymousUser()
    assert (await topics.access("news", anonymous)).topic.slug == "news"
    missing, private = (
        await topics.access("nope", anonymous),
        await topics.access("secret", anonymous),
    )
    assert missing.topic is None and private.topic is None
    assert (missing.refusal, private.refusal) == (protocol.NOT_FOUND, protocol.FORBIDDEN)


async def test_rows_are_cached_until_saved_in_this_process():
    news = await make("news")
    assert (await topics.access("news", None)).topic.title == "news"
    await database_sync_to_async(Topic.objects.filter(pk=news.pk).update)(title="changed")
    assert (await topics.access("news", None)).topic.title == "news"  # cached (1 s)
    assert (await topics.access("news", None, fresh=True)).topic.title == "changed"
    news.title = "saved"
    await database_sync_to_async(news.save)()  # a save in this process forgets the row
    assert (await topics.access("news", None)).topic.title == "saved"


async def test_rule_asks_the_one_publish_rule():
    chat = await make("chat", visitor_publish=True)
    news = await make("news")
    private = await make("private", visitor_publish=True, private=True)
    assert await topics.rule(chat, "publish", AnonymousUser())
    assert not await topics.rule(news, "publish", AnonymousUser())
    assert not await topics.rule(private, "publish", AnonymousUser())


async def test_latest_seqs_and_heads():
    news = await make("news")
    for i in range(3):
        await database_sync_to_async(publish)(news, i)
    assert await topics.latest_seq(news.pk) == 3
    assert await database_sync_to_async(topics.heads)(["news"]) == {"news": 3}
