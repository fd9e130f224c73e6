"""One focus against real SIPp members, subscribers and a SIPp UAS.

Each test runs a real ``twistd mfocus`` on loopback and real SIPp
processes; it asserts on what SIPp saw (its ``<log>`` lines and message
traces), on the focus's JSON API, and validates every conference-info
document against the RFC 4575 schema.
"""

import signal
import time

import pytest

from .harness import Focus, Sipp, api_get, free_port, notify_documents, sip_header, wait_for

NS = {"ci": "urn:ietf:params:xml:ns:conference-info"}
#: RTP ranges per test process so parallel foci never share ports.
_next_rtp = [31000]


@pytest.fixture
def focus(tmp_path):
    port, http = free_port(), free_port()
    low = _next_rtp[0]
    _next_rtp[0] += 100
    config = tmp_path / "mfocus.conf"
    # [room:room]: the watchers subscribe before anyone joins (a SUBSCRIBE makes no room)
    # [media] rtp_timeout = 0: SIPp members send no RTP
    config.write_text("[events]\nmin_expires = 1\nnotify_interval = 0.1\n[room:room]\n"
                      "[media]\nrtp_timeout = 0\n")
    f = Focus(["--config", str(config), "--listen", f"udp:127.0.0.1:{port}",
               "--http", f"tcp:{http}:interface=127.0.0.1",
               "--rtp-ports", f"{low}-{low + 99}"], tmp_path)
    f.wait_ready(port)
    f.port, f.http = port, http
    f.target = f"127.0.0.1:{port}"
    yield f
    f.stop()


def members(focus, name):
    status, body = api_get(focus.http, f"/api/v1/conferences/{name}")
    return body["members"] if status == 200 else None


def test_members_dial_in_and_leave(focus, tmp_path):
    calls = Sipp("member.xml", focus.target, tmp_path,
                 ["-s", "room", "-m", "3", "-l", "3", "-r", "20", "-d", "3000",
                  "-set", "wait_bye", "0"])
    joined = wait_for(lambda: (members(focus, "room") or []) if len(
        members(focus, "room") or []) == 3 else None)
    assert calls.wait() == 0, calls.errors()
    assert sorted(m["uri"] for m in joined) == [
        f"sip:member{i}@127.0.0.1:{calls.port}" for i in (1, 2, 3)]
    assert {m["status"] for m in joined} == {"connected"}
    assert {m["focus"] for m in joined} == {f"sip:127.0.0.1:{focus.port}"}
    contacts = [line for line in calls.logs() if line.startswith("contact ")]
    assert len(contacts) == 3
    assert all(f"<sip:room@127.0.0.1:{focus.port}>;isfocus" in c for c in contacts)
    # Everyone left: the empty conference nobody watches is forgotten.
    assert wait_for(lambda: api_get(focus.http, "/api/v1/conferences/room")[0] == 404)
    assert focus.alive()


def test_factory_uri_makes_a_new_conference_each_time(focus, tmp_path):
    calls = Sipp("member.xml", focus.target, tmp_path,
                 ["-s", "conference", "-m", "2", "-l", "2", "-r", "20", "-d", "1500",
                  "-set", "wait_bye", "0"])
    listed = wait_for(lambda: [c for c in api_get(focus.http, "/api/v1/conferences")[1]
                               if c["members"] == 1] if len(
        api_get(focus.http, "/api/v1/conferences")[1]) == 2 else None)
    assert calls.wait() == 0, calls.errors()
    uris = sorted(line.split()[1] for line in calls.logs() if line.startswith("contact "))
    assert len(uris) == 2 and uris[0] != uris[1]
    for uri in uris:
        name = uri.split(":")[1].split("@")[0]
        assert name.startswith("conf-") and name != "conference"
    assert sorted(c["uri"] for c in listed) == uris


def test_refer_dials_out_with_sipfrag_then_removes(focus, tmp_path):
    uas = Sipp("uas", None, tmp_path, ["-m", "1"], name="carol")   # 180, 200, BYE
    referrer = Sipp("referrer.xml", focus.target, tmp_path,
                    ["-s", "room", "-m", "1", "-key", "refer_to",
                     f"sip:carol@127.0.0.1:{uas.port}"])
    assert referrer.wait() == 0, referrer.errors()
    assert uas.wait() == 0, uas.errors()
    logs = referrer.logs()
    frags = [line.split()[1:3] for line in logs if line.startswith("sipfrag ")]
    assert frags == [["100", "active"], ["180", "active"], ["200", "terminated"]]
    byes = [line.split()[1:3] for line in logs if line.startswith("bye-sipfrag ")]
    assert byes == [["100", "active"], ["200", "terminated"]]
    invite = next(m for m in uas.messages(received=True) if m.startswith("INVITE "))
    assert sip_header(invite, "From").startswith(f"<sip:room@127.0.0.1:{focus.port}>")
    assert sip_header(invite, "Contact").endswith(";isfocus")
    assert sip_header(invite, "Referred-By") == f"<sip:referrer@127.0.0.1:{referrer.port}>"
    assert any(m.startswith("BYE ") for m in uas.messages(received=True))


def test_subscription_full_then_partials_refresh_unsubscribe(focus, tmp_path, schema):
    watcher = Sipp("subscriber.xml", focus.target, tmp_path,
                   ["-s", "room", "-m", "1", "-set", "expires", "60", "-set", "partials", "2",
                    "-set", "refresh", "1", "-set", "unsubscribe", "1"])
    assert wait_for(lambda: members(focus, "room") == [])    # subscribed, nobody in
    call = Sipp("member.xml", focus.target, tmp_path,
                ["-s", "room", "-m", "1", "-d", "1000", "-set", "wait_bye", "0"])
    assert call.wait() == 0, call.errors()
    assert watcher.wait() == 0, watcher.errors()
    docs = notify_documents(watcher, schema)
    assert len(docs) == 5
    versions = [int(doc.get("version")) for _, doc in docs]
    assert versions == sorted(versions) and len(set(versions)) == 5
    states = [doc.get("state") for _, doc in docs]
    assert states == ["full", "partial", "partial", "full", "full"]
    count = [doc.findtext("ci:conference-state/ci:user-count", namespaces=NS)
             for _, doc in docs]
    assert count == ["0", "1", "0", "0", "0"]
    member = f"sip:member1@127.0.0.1:{call.port}"
    joined, left = docs[1][1], docs[2][1]
    assert [u.get("entity") for u in joined.iterfind("ci:users/ci:user", NS)] == [member]
    endpoint = joined.find("ci:users/ci:user/ci:endpoint", NS)
    assert endpoint.findtext("ci:status", namespaces=NS) == "connected"
    assert endpoint.findtext("ci:joining-method", namespaces=NS) == "dialed-in"
    # The watcher is no member: it does not get the member's dialog ids
    # (RFC 4575 §5.7.5 <call-info>, enough to forge a Replaces).
    assert endpoint.find("ci:call-info", NS) is None
    assert [(u.get("entity"), u.get("state")) for u in left.iterfind("ci:users/ci:user", NS)] \
        == [(member, "deleted")]
    assert [s.split(";")[0] for s, _ in docs] == ["active"] * 4 + ["terminated"]


def test_subscription_expires(focus, tmp_path, schema):
    watcher = Sipp("subscriber.xml", focus.target, tmp_path,
                   ["-s", "room", "-m", "1", "-set", "expires", "2", "-set", "partials", "1000000",
                    "-set", "refresh", "0", "-set", "unsubscribe", "0"])
    assert watcher.wait() == 0, watcher.errors()
    docs = notify_documents(watcher, schema)
    assert [s for s, _ in docs] == ["active;expires=2", "terminated;reason=timeout"]


def test_sigterm_ends_calls_and_subscriptions(focus, tmp_path, schema):
    watcher = Sipp("subscriber.xml", focus.target, tmp_path,
                   ["-s", "room", "-m", "1", "-set", "expires", "600", "-set", "partials", "1000000",
                    "-set", "refresh", "0", "-set", "unsubscribe", "0"])
    calls = Sipp("member.xml", focus.target, tmp_path,
                 ["-s", "room", "-m", "2", "-l", "2", "-r", "20", "-set", "wait_bye", "1"])
    assert wait_for(lambda: len(members(focus, "room") or []) == 2)
    assert wait_for(lambda: api_get(focus.http, "/api/v1/conferences/room")[1].get(
        "subscriptions") == 1)
    focus.proc.send_signal(signal.SIGTERM)
    # twistd ends by re-raising the signal (systemd counts that as clean).
    assert focus.proc.wait(15) in (0, -signal.SIGTERM)
    assert calls.wait() == 0, calls.errors()
    assert watcher.wait() == 0, watcher.errors()
    assert [line for line in calls.logs() if line == "BYE from the focus"] == [
        "BYE from the focus"] * 2
    docs = notify_documents(watcher, schema)
    assert docs[-1][0] == "terminated;reason=noresource"


def test_json_logs_one_line_per_call_event_and_api_404(tmp_path):
    import json
    port, http = free_port(), free_port()
    f = Focus(["--listen", f"udp:127.0.0.1:{port}", "--log-format", "json",
               "--http", f"tcp:{http}:interface=127.0.0.1", "--rtp-ports", "32900-32999"],
              tmp_path)
    try:
        f.wait_ready(port)
        assert api_get(http, "/api/v1/conferences/nosuch")[0] == 404
        assert api_get(http, "/api/v1/nothing")[0] == 404
        assert api_get(http, "/api/v1/leave")[0] == 405      # leaving takes a POST
        call = Sipp("member.xml", f"127.0.0.1:{port}", tmp_path,
                    ["-s", "room", "-m", "1", "-d", "500", "-set", "wait_bye", "0"])
        assert call.wait() == 0, call.errors()
    finally:
        f.stop()
    events = [json.loads(line) for line in f.log().splitlines() if line.strip()]
    calls = [e for e in events if e.get("call") == f"1-{call.proc.pid}@127.0.0.1"]
    assert [e["event"] for e in calls] == ["joined", "left"]
    assert all(e["conf"] == "room" for e in calls)


@pytest.mark.slow
def test_a_member_that_stops_refreshing_its_session_is_ended(focus, tmp_path):
    """RFC 4028: SIPp asks for Session-Expires 90 (it refreshes) and never
    does; the 200 says Session-Expires: 90;refresher=uac with Require:
    timer, and the focus ends the call with BYE once the interval lapses
    (60 s: 90 - min(32, 90/3)); the member leaves the conference."""
    started = time.monotonic()
    member = Sipp("member_timer.xml", focus.target, tmp_path, ["-s", "room", "-m", "1"],
                  timeout=120)
    assert wait_for(lambda: len(members(focus, "room") or []) == 1)
    assert member.wait() == 0, member.errors()
    elapsed = time.monotonic() - started
    logs = "\n".join(member.logs())
    assert "90;refresher=uac require timer" in logs, logs
    assert "BYE from the focus" in logs
    assert elapsed >= 55                        # not before the interval lapsed
    assert wait_for(lambda: not members(focus, "room"))
