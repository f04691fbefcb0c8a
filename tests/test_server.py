"""The daphne command line the project runs (realtime/server.py)."""

from realtime.server import daphne_command


def test_daphne_command_sets_every_flag_on_purpose(settings):
    settings.REALTIME = {"MAX_FRAME_BYTES": 1234}
    command = daphne_command("127.0.0.1", 8001, access_log=False)
    joined = " ".join(command)
    assert "-e tcp:port=8001:interface=127.0.0.1:backlog=1024" in joined
    assert "--websocket-max-message-size 1234" in joined
    assert "--websocket_timeout -1" in joined and "--websocket_connect_timeout 10" in joined
    assert "--ping-interval 20 --ping-timeout 30" in joined
    assert "-v 0" in joined and command[-1] == "project.asgi:application"


def test_daphne_command_escapes_ipv6_and_turns_on_the_access_log(monkeypatch):
    monkeypatch.setenv("ACCESS_LOG", "1")
    command = daphne_command("::1", 9000)
    assert "tcp:port=9000:interface=\\:\\:1:backlog=1024" in command
    assert command[command.index("-v") + 1] == "1"
