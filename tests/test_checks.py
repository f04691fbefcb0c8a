"""System checks on settings.REALTIME and the secret-key refusal."""

import pytest
from django.core.exceptions import ImproperlyConfigured

from realtime.checks import check_realtime_settings
from realtime.conf import refuse_insecure_secret_key


def ids(settings_value, settings):
    settings.REALTIME = settings_value
    return [e.id for e in check_realtime_settings()]


def test_defaults_pass(settings):
    assert ids({}, settings) == []


def test_unknown_key_rejected(settings):
    settings.REALTIME = {"MAX_FRAME_BYTE": 1}
    errors = check_realtime_settings()
    assert [e.id for e in errors] == ["realtime.E002"]
    assert "MAX_FRAME_BYTE" in errors[0].msg and "MAX_FRAME_BYTES" in errors[0].hint


def test_not_a_dict_rejected(settings):
    assert ids(["MAX_FRAME_BYTES"], settings) == ["realtime.E001"]


@pytest.mark.parametrize(
    "bad",
    [
        {"MAX_FRAME_BYTES": 0},
        {"MAX_FRAME_BYTES": "64k"},
        {"MAX_SUBSCRIPTIONS": True},
        {"PUBLISH_RATE_PER_S": -1},
        {"DEFAULT_BACKLOG": -1},
        {"DEFAULT_RETENTION": 0},
        {"SCHEDULER_TICK": 0},
        {"OUTBOX_GRACE": -0.1},
        {"ALLOWED_ORIGINS": "https://example.com"},
        {"ALLOWED_ORIGINS": ["example.com"]},
        {"REQUIRE_ORIGIN": "yes"},
        {"CHANNEL_LAYER": "missing"},
        {"PRESENCE_GRACE": -1},
        {"PRESENCE_INFO": "no.such.module.info"},
        {"PRESENCE_INFO": 3},
        {"WHISPER_RATE_PER_S": 0},
        {"WHISPER_BURST": 0},
        {"GC_TUNING": "on"},
        {"GC_FULL_INTERVAL": -1},
        {"GC_FULL_INTERVAL": "10"},
    ],
)
def test_bad_values_rejected_with_hint(settings, bad):
    settings.REALTIME = bad
    errors = check_realtime_settings()
    assert "realtime.E003" in [e.id for e in errors]
    assert all(e.hint for e in errors)


def test_in_memory_layer_warned_outside_debug(settings):
    settings.DEBUG = False
    settings.CHANNEL_LAYERS = {"default": {"BACKEND": "channels.layers.InMemoryChannelLayer"}}
    assert ids({}, settings) == ["realtime.W001"]


def test_missing_layer_is_an_error(settings):
    settings.CHANNEL_LAYERS = {}
    assert "realtime.E004" in ids({}, settings)


def test_dev_secret_key_refused_with_debug_off(settings):
    settings.DEBUG = False
    settings.SECRET_KEY = settings.DEV_SECRET_KEY
    with pytest.raises(ImproperlyConfigured, match="SECRET_KEY"):
        refuse_insecure_secret_key()
    settings.DEBUG = True
    refuse_insecure_secret_key()
    settings.DEBUG = False
    settings.SECRET_KEY = "x" * 60
    refuse_insecure_secret_key()


def test_settings_reload_on_change(settings):
    from realtime.conf import realtime_settings

    settings.REALTIME = {"MAX_SUBSCRIPTIONS": 3}
    assert realtime_settings.MAX_SUBSCRIPTIONS == 3
    assert realtime_settings.MAX_SUBSCRIPTIONS == 3  # kept as an attribute once read
    assert vars(realtime_settings)["MAX_SUBSCRIPTIONS"] == 3
    settings.REALTIME = {}
    assert realtime_settings.MAX_SUBSCRIPTIONS == 100
    settings.REALTIME = {"MAX_SUBSCRIPTIONS": 5, "PUBLISH_BURST": 2}
    assert (realtime_settings.MAX_SUBSCRIPTIONS, realtime_settings.PUBLISH_BURST) == (5, 2)
    with pytest.raises(AttributeError):
        realtime_settings.NOPE  # noqa: B018


@pytest.mark.parametrize("hosts", [["*"], [".example.com", "example.com"]])
def test_deploy_check_warns_when_wildcard_hosts_open_the_origin_check(settings, hosts):
    from realtime.checks import check_open_origins

    settings.ALLOWED_HOSTS = hosts
    warnings = check_open_origins()
    assert [w.id for w in warnings] == ["realtime.W002"]
    assert "ALLOWED_ORIGINS" in warnings[0].hint


def test_deploy_check_quiet_with_exact_hosts(settings):
    from realtime.checks import check_open_origins

    settings.ALLOWED_HOSTS = ["example.com", "www.example.com"]
    assert check_open_origins() == []


@pytest.mark.parametrize("entries", [["127.0.0.1", "localhost"], ["10.0.0.0/33"], "not-an-ip"])
def test_metrics_allowed_ips_must_be_addresses_or_networks(settings, entries):
    from realtime.checks import check_metrics_access
    from realtime.ops import address_allowed, allowed_networks

    settings.METRICS_ALLOWED_IPS = entries
    errors = check_metrics_access()
    assert [e.id for e in errors] == ["realtime.E005"]
    # The endpoint itself skips what it cannot read instead of failing every scrape.
    assert address_allowed("127.0.0.1", allowed_networks()) is ("127.0.0.1" in entries)


def test_metrics_allowed_ips_accepts_networks(settings):
    from realtime.checks import check_metrics_access

    settings.METRICS_ALLOWED_IPS = ["127.0.0.1", "::1", "10.0.0.0/8", "fd00::/8"]
    assert check_metrics_access() == []


def test_presence_info_may_name_an_importable_function(settings):
    assert ids({"PRESENCE_INFO": "django.utils.text.slugify", "PRESENCE_GRACE": 0}, settings) == []
