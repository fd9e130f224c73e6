"""Moderation by the management API (issue 20): kick, mute-all, lock, end.

First on the Clock-driven rig (the rules: a member of another focus is
409, a configured room's policy is not changed in place, a call replacing
a member's own is no new caller), then against a real ``twistd mfocus``
with SIPp members: what SIPp saw (the focus's BYE, the 403) and what the
API shows (``muted``, ``locked``); and by audio, with baresip phones.
"""

import json
import time
import urllib.error
import urllib.request

import pytest

from twisted_mfocus.conference.replica import FOCUS, SET, Delta, FocusRecord, MemberRecord

from .focusrig import ROOM, SDP, Phone, answer, join, make_rig
from .harness import (
    Focus,
    Sipp,
    api_get,
    free_port,
    notify_documents,
    sip_header,
    wait_for,
)

OTHER = "sip:127.0.0.1:5070"
NS = {"ci": "urn:ietf:params:xml:ns:conference-info"}


# -- the rules, on the rig ------------------------------------------------------------

def _held_elsewhere(room, user="sip:bob@example.com"):
    """Focus OTHER holds ``user`` in ``room`` (its partition, as replicated)."""
    room.mesh.replica.receive(Delta(OTHER, 1, (
        (FOCUS, FocusRecord(OTHER, capacity=5, load=1)),
        (SET, MemberRecord(f"{user};x=1", user, epoch=0)))))
    return user


def test_what_another_focus_holds_is_asked_of_it():
    """A kick is forwarded as a REFER (test_moderation_forward.py); a mute,
    a mute-all, a lock and an end as a MESSAGE to the focus holding
    members (relay.py), which does it and asks nobody further (409 then)."""
    rig = make_rig()
    join(rig, Phone(5071))
    room = rig.focus.rooms.get("room")
    moderation = rig.focus.views.moderation
    bob = _held_elsewhere(room)

    def asked():
        return [json.loads(m.body) for m in rig.wire.take("MESSAGE")]
    assert moderation.set_muted("room", bob, True) == (
        202, {"uri": bob, "muted": True, "forwarded_to": OTHER})
    assert asked() == [{"action": "mute", "member": bob, "except": None}]
    assert moderation.set_muted("room", bob, True, relay=False) == (
        409, {"error": "held by another focus", "focus": OTHER})
    assert moderation.kick("room", bob) == (202, {"uri": bob, "forwarded_to": OTHER})
    status, body = moderation.mute_all("room", True, spare=bob)   # the speaker elsewhere
    assert status == 200 and body["members"] == ["sip:phone5071@127.0.0.1:5071"]
    assert body["elsewhere"] == [{"uri": bob, "focus": OTHER}]
    assert body["forwarded_to"] == [OTHER]
    assert asked() == [{"action": "mute-all", "member": None, "except": bob}]
    assert moderation.mute_all("room", False, relay=False)[1]["forwarded_to"] == []
    assert asked() == []
    assert moderation.kick("room", "sip:nobody@example.com")[0] == 404
    assert moderation.kick("room", "not a uri")[0] == 400
    assert moderation.kick("nosuch", bob)[0] == 404
    assert moderation.set_muted("nosuch", bob, True)[0] == 404
    status, body = moderation.end("room")
    assert status == 200 and body["calls"] == 1 and body["forwarded_to"] == [OTHER]
    assert [m.body for m in rig.wire.take("BYE")] and \
        asked() == [{"action": "end", "member": None, "except": None}]


def test_lock_refuses_new_callers_and_leaves_the_configured_policy_alone():
    rig = make_rig(config_text="[room:room]\nsubject = Board\n")
    configured = rig.focus.config.rooms["room"]
    first = Phone(5072)
    ok = join(rig, first)
    moderation = rig.focus.views.moderation
    assert moderation.set_locked("room", True) == (
        200, {"name": "room", "locked": True, "forwarded_to": []})
    assert moderation.locked() == ["room"]
    assert rig.focus.views.conference("room")["locked"] is True
    assert configured.locked is False               # replaced, not changed in place
    late = Phone(5073)
    rig.deliver(late.request("INVITE", ROOM, body=SDP), late.peer)
    assert [(m.status, m.reason) for m in rig.wire.take() if m.status >= 200] == [
        (403, "Conference Locked")]
    # The member's own call replaced (a transfer, a handover): no new caller.
    replaces = f"{first.call_id};to-tag={ok.to.tag};from-tag={first.tag}"
    rig.deliver(first.request("INVITE", ROOM, body=SDP, call_id="moved",
                              headers=[("Replaces", replaces)]), first.peer)
    assert [m.status for m in rig.wire.take() if m.status >= 200] == [200]
    assert moderation.set_locked("room", False)[1] == {"name": "room", "locked": False,
                                                       "forwarded_to": []}
    join(rig, Phone(5074))
    assert len(rig.focus.views.conference("room")["members"]) == 2
    assert moderation.set_locked("nosuch", True)[0] == 404


def test_end_byes_every_call_and_terminates_every_subscription(schema):
    rig = make_rig()
    watcher = Phone(5075, "watcher")
    join(rig, Phone(5076))
    join(rig, Phone(5077))
    rig.deliver(watcher.request("SUBSCRIBE", ROOM, headers=[("Event", "conference")]),
                watcher.peer)
    answer(rig, rig.wire.take("NOTIFY"), watcher.peer)
    status, body = rig.focus.views.moderation.end("room")
    assert (status, body) == (200, {"name": "room", "calls": 2, "subscriptions": 1,
                                    "forwarded_to": []})
    assert len(rig.wire.take("BYE")) == 2
    (final,) = rig.wire.take("NOTIFY")
    assert final.headers.get("subscription-state") == "terminated;reason=noresource"
    from lxml import etree
    doc = etree.fromstring(final.body)
    schema.assertValid(doc)
    assert doc.findtext("ci:conference-state/ci:user-count", namespaces=NS) == "0"
    answer(rig, [final], watcher.peer)
    assert "room" not in rig.focus.rooms            # nothing holds it: retired


# -- a real focus, SIPp members -------------------------------------------------------

@pytest.fixture
def focus(tmp_path):
    port, http = free_port(), free_port()
    low = free_port(count=40, even=True)            # RTP pairs of this test's calls
    config = tmp_path / "mfocus.conf"
    # [room:room]: a watcher may subscribe before anyone joins; rtp_timeout
    # 0: SIPp members send no RTP.
    config.write_text("[events]\nmin_expires = 1\nnotify_interval = 0.05\n[room:room]\n"
                      "[media]\nrtp_timeout = 0\n")
    f = Focus(["--config", str(config), "--listen", f"udp:127.0.0.1:{port}",
               "--http", f"tcp:{http}:interface=127.0.0.1",
               "--rtp-ports", f"{low}-{low + 39}"], tmp_path)
    try:
        f.wait_ready(port)
    except BaseException:
        f.stop()
        raise
    f.port, f.http, f.target = port, http, f"127.0.0.1:{port}"
    yield f
    f.stop()


def post(port, path, body=None, raw=None):
    """(status, JSON) of a POST with a JSON ``body`` (or ``raw`` bytes)."""
    data = raw if raw is not None else json.dumps(body).encode() if body is not None else b""
    request = urllib.request.Request(f"http://127.0.0.1:{port}{path}", data=data,
                                     headers={"Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(request, timeout=5) as r:
            return r.status, json.loads(r.read())
    except urllib.error.HTTPError as e:
        return e.code, json.loads(e.read() or b"null")


def members(focus):
    status, body = api_get(focus.http, "/api/v1/conferences/room")
    return {m["uri"]: m for m in body["members"]} if status == 200 else {}


def _members(sipp, *numbers):
    return [f"sip:member{n}@127.0.0.1:{sipp.port}" for n in numbers]


def _dial(focus, tmp_path, count, name="members"):
    """``count`` SIPp members that stay until the focus sends BYE; joined."""
    sipp = Sipp("member.xml", focus.target, tmp_path,
                ["-s", "room", "-m", str(count), "-l", str(count), "-r", "20",
                 "-set", "wait_bye", "1"], timeout=60, name=name)
    expected = set(_members(sipp, *range(1, count + 1)))
    assert wait_for(lambda: expected <= set(members(focus)), timeout=15), members(focus)
    return sipp


def _byes(sipp):
    """The Request-URIs of the BYEs SIPp received, without parameters."""
    return sorted(m.split()[1].split(";")[0] for m in sipp.messages(received=True)
                  if m.startswith("BYE "))


ROOM_API = "/api/v1/conferences/room"


def _member_path(uri):
    return f"{ROOM_API}/members/{uri.replace(':', '%3A').replace('@', '%40')}"


def test_kick_sends_bye_to_that_member_only(focus, tmp_path):
    sipp = _dial(focus, tmp_path, 3)
    one, two, three = _members(sipp, 1, 2, 3)
    try:
        assert post(focus.http, _member_path(two) + "/kick") == (200, {"uri": two, "calls": 1})
        assert wait_for(lambda: set(members(focus)) == {one, three}), members(focus)
        assert post(focus.http, _member_path(two) + "/kick") == (
            404, {"error": "no such member"})
        assert post(focus.http, f"{ROOM_API}/members/nonsense/kick")[0] == 400
        assert post(focus.http, "/api/v1/conferences/nosuch/members/x/kick")[0] == 404
        assert wait_for(lambda: _byes(sipp) == [two])
        assert post(focus.http, f"{ROOM_API}/end")[1]["calls"] == 2
        assert sipp.wait() == 0, sipp.errors()      # every call ended by our BYE
    finally:
        sipp.kill()
    assert _byes(sipp) == sorted([one, two, three])
    assert sipp.logs().count("BYE from the focus") == 3
    assert focus.alive()


def test_mute_all_but_one_shows_in_muted_and_media(focus, tmp_path):
    sipp = _dial(focus, tmp_path, 3)
    one, two, three = _members(sipp, 1, 2, 3)
    try:
        status, body = post(focus.http, f"{ROOM_API}/mute-all", {"except": two})
        assert status == 200, body
        assert body == {"name": "room", "muted": True, "except": two,
                        "members": [one, three], "elsewhere": [], "forwarded_to": []}
        shown = members(focus)
        assert {u: m["muted"] for u, m in shown.items()} == {one: True, two: False, three: True}
        assert {u: m["media"] for u, m in shown.items()} == {
            one: "sendonly", two: "sendrecv", three: "sendonly"}
        # Refused bodies change nothing: a typo must not mute the speaker.
        for raw, why in [(b"{", 400), (b'{"expect": "sip:x@y"}', 400), (b"[1]", 400),
                         (b'{"except": 5}', 400), (json.dumps({"except": "x" * 5000}).encode(),
                                                   413)]:
            assert post(focus.http, f"{ROOM_API}/mute-all", raw=raw)[0] == why, raw
        assert post(focus.http, f"{ROOM_API}/mute-all", {"except": "sip:nobody@h"}) == (
            404, {"error": "no such member: sip:nobody@h"})
        assert members(focus)[two]["muted"] is False
        status, body = post(focus.http, f"{ROOM_API}/unmute-all")
        assert (status, body["members"]) == (200, [one, two, three])
        assert {m["muted"] for m in members(focus).values()} == {False}
        assert {m["media"] for m in members(focus).values()} == {"sendrecv"}
        assert post(focus.http, "/api/v1/conferences/nosuch/mute-all")[0] == 404
        post(focus.http, f"{ROOM_API}/end")
        assert sipp.wait() == 0, sipp.errors()
    finally:
        sipp.kill()


def test_a_locked_room_refuses_new_callers_403_and_admits_after_unlock(focus, tmp_path):
    first = _dial(focus, tmp_path, 1, "first")
    refused = later = None
    try:
        assert post(focus.http, f"{ROOM_API}/lock") == (
            200, {"name": "room", "locked": True, "forwarded_to": []})
        assert api_get(focus.http, ROOM_API)[1]["locked"] is True
        refused = Sipp("caller_refused.xml", focus.target, tmp_path,
                       ["-s", "room", "-m", "1"], timeout=30)
        assert refused.wait() == 0, refused.errors()
        assert "refused SIP/2.0 403 Conference Locked" in refused.logs()
        assert set(members(focus)) == set(_members(first, 1))       # the member stayed
        assert post(focus.http, f"{ROOM_API}/unlock") == (
            200, {"name": "room", "locked": False, "forwarded_to": []})
        later = _dial(focus, tmp_path, 1, "later")
        assert set(members(focus)) == set(_members(first, 1) + _members(later, 1))
        assert post(focus.http, "/api/v1/conferences/nosuch/lock")[0] == 404
        post(focus.http, f"{ROOM_API}/end")
        assert first.wait() == 0, first.errors()
        assert later.wait() == 0, later.errors()
    finally:
        for sipp in (first, refused, later):
            if sipp is not None:
                sipp.kill()


def test_end_byes_every_member_and_ends_every_subscription(focus, tmp_path, schema):
    watcher = Sipp("subscriber.xml", focus.target, tmp_path,
                   ["-s", "room", "-m", "1", "-set", "expires", "60", "-set", "partials",
                    "1000000", "-set", "refresh", "0", "-set", "unsubscribe", "0"],
                   timeout=60)
    sipp = None
    try:
        assert wait_for(lambda: api_get(focus.http, ROOM_API)[1].get("subscriptions") == 1)
        sipp = _dial(focus, tmp_path, 3)
        assert post(focus.http, f"{ROOM_API}/end") == (
            200, {"name": "room", "calls": 3, "subscriptions": 1, "forwarded_to": []})
        assert sipp.wait() == 0, sipp.errors()
        assert watcher.wait() == 0, watcher.errors()
    finally:
        for p in (watcher, sipp):
            if p is not None:
                p.kill()
    assert _byes(sipp) == sorted(_members(sipp, 1, 2, 3))
    assert sipp.logs().count("BYE from the focus") == 3
    docs = notify_documents(watcher, schema)
    state, last = docs[-1]
    assert state == "terminated;reason=noresource"
    assert last.findtext("ci:conference-state/ci:user-count", namespaces=NS) == "0"
    final = [m for m in watcher.messages(received=True) if m.startswith("NOTIFY ")][-1]
    assert sip_header(final, "Event") == "conference"
    # Nothing holds the room any more: it is retired, and ending it again is 404.
    assert wait_for(lambda: api_get(focus.http, ROOM_API)[0] == 404)
    assert post(focus.http, f"{ROOM_API}/end")[0] == 404
    assert focus.alive()


# -- by audio: baresip phones, what each received captured -----------------------------

def test_mute_all_but_one_by_audio(tmp_path):
    """Everyone but alice muted: bob and carol hear only alice, alice hears
    nobody; unmuted again, each hears the other two."""
    from .foci import start_foci, stop_all
    from .pcap import Capture
    from .peers import dial_all
    from .peers.process import need
    from .test_audio import CONF, phones_on, rtp_filter
    from .tones import TONES, heard
    need("baresip", "dumpcap")
    nodes = start_foci(tmp_path, [("focus", "primary", 10)])
    focus = nodes[0]
    phones = phones_on(tmp_path, TONES)
    alice, bob, carol = phones
    capture = Capture(str(tmp_path / "rtp.pcap"), bpf=rtp_filter(phones))
    marks = []

    def step(name, path, body=None):
        status, answer = post(focus.http, f"/api/v1/conferences/{CONF}/{path}", body)
        assert status == 200, answer
        time.sleep(3)
        marks.append((name, time.time()))
    try:
        dial_all(phones, f"sip:{CONF}@127.0.0.1:{focus.port}")
        assert wait_for(lambda: len(focus.conference(CONF)["members"]) == 3, timeout=10)
        step("all but alice muted", "mute-all", {"except": alice.aor})
        muted = {m["uri"]: m["muted"] for m in focus.conference(CONF)["members"]}
        assert muted == {alice.aor: False, bob.aor: True, carol.aor: True}
        step("everyone unmuted", "unmute-all")
    finally:
        capture.stop()
        for phone in phones:
            phone.stop()
        stop_all(nodes)
    a, b, c = (TONES[p.name] for p in phones)
    expect = {"all but alice muted": {alice: set(), bob: {a}, carol: {a}},
              "everyone unmuted": {alice: {b, c}, bob: {a, c}, carol: {a, b}}}
    for name, end in marks:
        for phone, tones in expect[name].items():
            assert heard(capture.path, phone, end - 2.5, end) == tones, (name, phone.name)
