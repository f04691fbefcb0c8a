"""The HTTP publish API against real daphne: every status, idempotency keys, revoked and
scoped tokens, the rate per token, session publishing with CSRF, and ``manage.py tokens``."""

from __future__ import annotations

import asyncio
import json
import urllib.error
import urllib.request

import pytest
from websockets.asyncio.client import connect

from tests.helpers.browserless import Browserless
from tests.helpers.processes import manage


def post(url: str, body: bytes | str | None, headers: dict[str, str] | None = None):
    data = body.encode() if isinstance(body, str) else body
    request = urllib.request.Request(url, data=data, method="POST", headers=headers or {})
    request.add_header("Content-Type", "application/json")
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            return response.status, json.loads(response.read()), dict(response.headers)
    except urllib.error.HTTPError as exc:
        return exc.code, json.loads(exc.read()), dict(exc.headers)


def add_token(site, name: str, *topics: str) -> str:
    args = ["tokens", "add", name]
    for topic in topics:
        args += ["--topic", topic]
    return manage(site.env, *args).stdout.strip().splitlines()[-1]


COUNT = (
    "from realtime.models import Message\n"
    "print(Message.objects.filter(topic__slug='{slug}').count())"
)


def count(site, slug: str) -> int:
    return int(site.shell(COUNT.format(slug=slug)).split()[-1])


@pytest.fixture
def site(live_site):
    return live_site(scheduler=False)


def url(site, slug: str = "news") -> str:
    return f"{site.url}/api/v1/topics/{slug}/messages"


async def test_a_token_publishes_and_subscribers_receive_it(site):
    secret = add_token(site, "ci")
    assert secret.startswith("rt_") and len(secret) > 30
    origin = f"http://127.0.0.1:{site.port}"
    async with connect(site.ws_url, subprotocols=["realtime.v1"], origin=origin) as ws:
        await ws.recv()
        await ws.send(json.dumps({"type": "subscribe", "topic": "news"}))
        assert json.loads(await ws.recv())["type"] == "subscribed"
        while True:  # the backlog first
            frame = json.loads(await asyncio.wait_for(ws.recv(), 5))
            if frame["data"] == {"title": "Welcome", "body": "The site is live."}:
                break
        status, body, _ = await asyncio.to_thread(
            post,
            url(site),
            json.dumps({"data": {"title": "From CI"}}),
            {"Authorization": f"Bearer {secret}"},
        )
        assert status == 201 and body == {"topic": "news", "seq": 2}
        frame = json.loads(await asyncio.wait_for(ws.recv(), 10))
    assert frame["seq"] == 2 and frame["data"] == {"title": "From CI"}
    stored = site.shell(
        "from realtime.models import Message\n"
        "m = Message.objects.get(topic__slug='news', seq=2)\nprint(m.source, m.origin)"
    ).split()
    assert stored[-2:] == ["api", "token:ci"]
    listed = manage(site.env, "tokens", "list").stdout
    assert "ci" in listed and secret not in listed and "active" in listed


def test_an_idempotency_key_stores_one_message(site):
    secret = add_token(site, "retrying")
    headers = {"Authorization": f"Bearer {secret}", "Idempotency-Key": "order-42"}
    before = count(site, "news")
    first = post(url(site), '{"data": "once"}', headers)
    again = post(url(site), '{"data": "once"}', headers)
    assert first[0] == again[0] == 201 and first[1] == again[1]
    assert count(site, "news") == before + 1
    other = add_token(site, "other")  # another token's keys are its own
    third = post(url(site), '{"data": "once"}', {**headers, "Authorization": f"Bearer {other}"})
    assert third[0] == 201 and third[1]["seq"] == first[1]["seq"] + 1
    assert post(url(site), '{"data": 1}', {**headers, "Idempotency-Key": "k" * 101})[0] == 400


def test_every_refusal_has_its_status_and_code(site):
    secret = add_token(site, "scoped", "news")
    auth = {"Authorization": f"Bearer {secret}"}
    cases = [
        (url(site), "not json", auth, 400, "bad_json"),
        (url(site), '{"no": "data"}', auth, 400, "bad_request"),
        (url(site), '["data"]', auth, 400, "bad_request"),
        (url(site), '{"data": "\\ud800"}', auth, 400, "bad_request"),  # a lone surrogate
        (url(site), '{"data": 1}', {"Authorization": "Bearer rt_nope"}, 401, "unauthorized"),
        (url(site), '{"data": 1}', {"Authorization": "Basic abc"}, 401, "unauthorized"),
        (url(site, "chat"), '{"data": 1}', auth, 403, "forbidden"),  # outside its topics
        (url(site, "no-such-topic"), '{"data": 1}', auth, 404, "not_found"),
        (url(site, "Bad%20Slug"), '{"data": 1}', auth, 404, "not_found"),
    ]
    for target, body, headers, status, code in cases:
        got = post(target, body, headers)
        assert (got[0], got[1]["error"]) == (status, code), (target, body, got)
        assert got[1]["message"]
    big = json.dumps({"data": "x" * 70_000})
    got = post(url(site), big, auth)
    assert (got[0], got[1]["error"]) == (413, "too_large")


def test_disabled_topics_revoked_tokens_and_the_rate(live_site):
    site = live_site(scheduler=False, realtime={"API_RATE_PER_S": 1, "API_BURST": 3})
    secret = add_token(site, "short-lived")
    auth = {"Authorization": f"Bearer {secret}"}
    site.shell(
        "from realtime.models import Topic\nTopic.objects.filter(slug='chat').update(enabled=False)"
    )
    assert post(url(site, "chat"), '{"data": 1}', auth)[0] == 404
    statuses = [post(url(site), '{"data": 1}', auth) for _ in range(5)]
    assert [s[0] for s in statuses[:3]] == [201, 201, 429]  # the burst of 3 (the 404 too)
    limited = next(s for s in statuses if s[0] == 429)
    assert limited[1]["error"] == "rate_limited" and int(limited[2]["Retry-After"]) >= 1
    manage(site.env, "tokens", "revoke", "short-lived")
    got = post(url(site), '{"data": 1}', auth)
    assert (got[0], got[1]["error"]) == (401, "unauthorized")
    assert "revoked" in manage(site.env, "tokens", "list").stdout


def test_sessions_publish_with_csrf_only(site):
    browser = Browserless(site.url)
    browser.opener.open(site.url + "/accounts/login/", timeout=10).read()  # a csrftoken cookie
    csrf = browser.cookie("csrftoken")
    assert csrf
    target = url(site, "chat")
    request = urllib.request.Request(
        target,
        data=b'{"data": {"text": "over http"}}',
        method="POST",
        headers={"Content-Type": "application/json", "X-CSRFToken": csrf, "Referer": site.url},
    )
    with browser.opener.open(request, timeout=10) as response:
        assert response.status == 201 and json.loads(response.read())["topic"] == "chat"
    without = urllib.request.Request(target, data=b'{"data": 1}', method="POST")
    with pytest.raises(urllib.error.HTTPError) as refused:
        browser.opener.open(without, timeout=10)
    assert refused.value.code == 403 and json.loads(refused.value.read())["error"] == "forbidden"
    # Visitors may not publish where the topic does not allow it.
    news = urllib.request.Request(
        url(site),
        data=b'{"data": 1}',
        method="POST",
        headers={"Content-Type": "application/json", "X-CSRFToken": csrf, "Referer": site.url},
    )
    with pytest.raises(urllib.error.HTTPError) as forbidden:
        browser.opener.open(news, timeout=10)
    assert forbidden.value.code == 403


def test_tokens_command_refuses_what_it_cannot_do(site):
    add_token(site, "dup")
    for args, message in [
        (["tokens", "add", "dup"], "already a token named 'dup'"),
        (["tokens", "add", "x", "--topic", "nope"], "No topic 'nope'"),
        (["tokens", "add", "x", "--family", "nope"], "No family 'nope'"),
        (["tokens", "revoke", "ghost"], "No token named 'ghost'"),
        (["tokens"], "required"),
    ]:
        done = manage(site.env, *args, check=False)
        assert done.returncode != 0 and message in done.stderr, (args, done.stderr)
    got = post(url(site), '{"data": 1}', {"Authorization": "Bearer " + "x" * 10})
    assert got[0] == 401


@pytest.mark.django_db
def test_the_admin_makes_a_token_and_shows_it_once(admin_client):
    from realtime import tokens
    from realtime.models import ApiToken

    response = admin_client.post(
        "/admin/realtime/apitoken/add/", {"name": "from-admin", "topics": []}, follow=True
    )
    assert response.status_code == 200
    shown = [str(m) for m in response.context["messages"]]
    secret = next(word for text in shown for word in text.split() if word.startswith("rt_"))
    token = ApiToken.objects.get(name="from-admin")
    assert token.token_hash == tokens.digest(secret) and secret not in token.token_hash
    assert tokens.authenticate(secret) == token
    token.refresh_from_db()
    assert token.last_used_at is not None  # its use is recorded
    page = admin_client.get(f"/admin/realtime/apitoken/{token.pk}/change/")
    assert secret not in page.content.decode()  # never shown again


def test_errors_stay_json_for_huge_bodies_and_missing_credentials(site):
    secret = add_token(site, "big")
    auth = {"Authorization": f"Bearer {secret}"}
    huge = b'{"data": "' + b"x" * 3_000_000 + b'"}'  # over Django's own 2.5 MB limit too
    got = post(url(site), huge, auth)
    assert (got[0], got[1]["error"]) == (413, "too_large")
    got = post(url(site), '{"data": 1}', {})  # neither a token nor a browser's session
    assert (got[0], got[1]["error"]) == (401, "unauthorized")
    assert got[2]["WWW-Authenticate"].startswith("Bearer"), got[2]
    got = post(url(site), '{"data": 1}', {"Authorization": "Bearer rt_unknown"})
    assert got[0] == 401 and 'error="invalid_token"' in got[2]["WWW-Authenticate"]
    log = site.daphne.output()
    assert "RequestDataTooBig" not in log and "Traceback" not in log, log[-3000:]


def test_a_key_reused_for_another_topic_is_refused(site):
    secret = add_token(site, "keys")
    auth = {"Authorization": f"Bearer {secret}", "Idempotency-Key": "k-1"}
    news, chat = count(site, "news"), count(site, "chat")
    first = post(url(site, "news"), '{"data": 1}', auth)
    assert first[0] == 201 and first[1]["topic"] == "news"
    assert post(url(site, "news"), '{"data": 2}', auth)[1] == first[1]  # the same answer
    other = post(url(site, "chat"), '{"data": 3}', auth)
    assert (other[0], other[1]["error"]) == (400, "bad_request")
    assert "'news'" in other[1]["message"] and "k-1" in other[1]["message"]
    assert (count(site, "news"), count(site, "chat")) == (news + 1, chat)  # one message


async def test_a_key_reused_on_a_socket_for_another_topic_is_refused(site):
    site.shell(
        "from realtime.models import Topic\n"
        "Topic.objects.create(slug='lobby', title='Lobby', visitor_publish=True)"
    )
    async with connect(site.ws_url, subprotocols=["realtime.v1"]) as ws:
        await ws.recv()
        frame = {"type": "publish", "topic": "chat", "data": 1, "key": "mine", "id": 1}
        await ws.send(json.dumps(frame))
        published = json.loads(await asyncio.wait_for(ws.recv(), 10))
        assert published["type"] == "published" and published["topic"] == "chat"
        await ws.send(json.dumps({**frame, "topic": "lobby", "id": 2}))
        refused = json.loads(await asyncio.wait_for(ws.recv(), 10))
    assert refused["type"] == "error" and refused["code"] == "bad_request", refused
    assert refused["id"] == 2 and refused["topic"] == "lobby" and "'chat'" in refused["message"]
    assert count(site, "lobby") == 0


def test_a_token_scoped_to_a_family_publishes_to_its_topics_and_makes_them(site):
    args = ["tokens", "add", "jobs", "--family", "services"]
    secret = manage(site.env, *args).stdout.strip().splitlines()[-1]
    auth = {"Authorization": f"Bearer {secret}"}
    got = post(url(site, "services:new-api"), '{"data": {"up": true}}', auth)
    assert got[0] == 201 and got[1] == {"topic": "services:new-api", "seq": 1}
    assert post(url(site, "news"), '{"data": 1}', auth)[0] == 403  # not in its scope
    assert post(url(site, "services:bad%20key"), '{"data": 1}', auth)[0] == 404
    assert post(url(site, "nofamily:1"), '{"data": 1}', auth)[0] == 404
    # A visitor's session: the family's rules (services: readable, not publishable).
    browser = Browserless(site.url)
    browser.opener.open(site.url + "/topics/chat/", timeout=10).read()
    csrf = browser.cookie("csrftoken")
    headers = {"X-CSRFToken": csrf, "Referer": site.url + "/", "Cookie": f"csrftoken={csrf}"}
    got = post(url(site, "services:new-api"), '{"data": 1}', headers)
    assert got[0] == 403 and got[1]["error"] == "forbidden"
    assert "services:*" in manage(site.env, "tokens", "list").stdout
