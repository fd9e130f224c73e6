"""One focus against real phones: baresip, linphonec behind Kamailio, and SIPp.

Each test runs a real ``twistd mfocus`` on loopback and real peers from
tests/peers.py.  It asserts on what the phones saw (baresip's ctrl_tcp
events and ``listcalls``, linphonec's stdout and debug log) and on the
focus's JSON API.  Every process is started here and stopped by its PID.
"""

import re
import socket
import time

import pytest

from .harness import Focus, Sipp, api_get, free_port, wait_for
from .peers import (Baresip, Kamailio, Linphonec, free_sip_port, port_free, tone_phone,
                    write_tone_wav)
from .peers.linphonec import linphone_messages
from .sipclient import header
from .peers.process import need, rtp_base
from .peers.kamailio import _KAMAILIO_CFG

HOST = "127.0.0.1"
#: RTP ranges of the foci started by this module: away from test_focus_sipp's 31000+.
_next_rtp = [33000]


def focus_rtp_range(width=100):
    """A range of ``width`` UDP ports, all free now, from 33000 up."""
    while True:
        low = _next_rtp[0]
        _next_rtp[0] += width
        if _next_rtp[0] > 40000:
            _next_rtp[0] = 33000
        if all(port_free(p, kinds=(socket.SOCK_DGRAM,)) for p in range(low, low + width)):
            return low, low + width - 1


@pytest.fixture
def focus(tmp_path):
    port, http = free_port(), free_port()
    low, high = focus_rtp_range()
    f = Focus(["--listen", f"udp:{HOST}:{port}",
               "--http", f"tcp:{http}:interface={HOST}",
               "--rtp-ports", f"{low}-{high}"], tmp_path)
    try:
        f.wait_ready(port)
    except BaseException:
        f.stop()
        raise
    f.port, f.http = port, http
    f.target = f"{HOST}:{port}"
    yield f
    f.stop()


def conference(focus, name):
    """(status, body) of ``GET /api/v1/conferences/NAME``."""
    return api_get(focus.http, f"/api/v1/conferences/{name}")


def members(focus, name):
    """The conference's members, or [] when it does not exist (404)."""
    status, body = conference(focus, name)
    assert status in (200, 404), (status, body)
    return body["members"] if status == 200 else []


def baresip(tmp_path, name, seconds=60.0):
    work = tmp_path / name
    work.mkdir()
    tone = write_tone_wav(work / "tone.wav", seconds=seconds)
    return Baresip(work, name, free_sip_port(), rtp_base(), free_port(),
                   tone_wav=tone)


# ---- 1. baresip ------------------------------------------------------------------

def test_baresip_whose_outbound_proxy_is_the_focus_joins(focus, tmp_path):
    """baresip 1.0 with the focus as its outbound proxy pre-loads a Route to
    it, repeating the ``lr`` parameter it was given (``...;lr;lr``): the
    Route is popped as ours, the repeat taken (the first value wins,
    logged once), and the call joins the conference."""
    need("baresip")
    alice = tone_phone(tmp_path, "alice", outbound=f"sip:{focus.target};transport=udp;lr")
    try:
        alice.start()
        alice.dial(f"sip:room@{focus.target}")
        alice.wait_event("CALL_ESTABLISHED", 8)
        joined = wait_for(lambda: members(focus, "room"), timeout=5)
    finally:
        alice.stop()
    assert [m["uri"] for m in joined] == [alice.aor], joined
    repeats = [line for line in focus.log().splitlines() if "repeats its 'lr' parameter" in line]
    assert len(repeats) == 1, repeats


def test_baresip_dials_in_and_stays_connected(focus, tmp_path):
    need("baresip")
    alice = baresip(tmp_path, "alice")
    try:
        alice.start()
        alice.dial(f"sip:room@{focus.target}")
        est = alice.wait_event("CALL_ESTABLISHED", 8)
        assert f"sip:room@{focus.target}" in est.get("peeruri", ""), est
        assert est.get("direction") == "outgoing", est

        joined = wait_for(lambda: members(focus, "room"), timeout=5)
        assert len(joined) == 1, joined
        assert joined[0]["uri"] == alice.aor, joined
        assert joined[0]["status"] == "connected", joined
        assert joined[0]["focus"] == f"sip:{focus.target}", joined

        # The call stays up: no CALL_CLOSED for 5 s, baresip and the focus still have it.
        with pytest.raises(TimeoutError):
            alice.wait_event("CALL_CLOSED", 5)
        assert len(alice.calls()) == 1, alice.calls()
        still = members(focus, "room")
        assert [(m["uri"], m["status"]) for m in still] == [(alice.aor, "connected")], still

        alice.hangup()
        closed = alice.wait_event("CALL_CLOSED", 5)
        assert alice.calls() == [], closed
        assert wait_for(lambda: members(focus, "room") == [], timeout=5), members(focus, "room")
        assert wait_for(lambda: conference(focus, "room")[0] == 404, timeout=5)
        assert focus.alive()
        assert alice.alive()
    finally:
        alice.stop()


# ---- 2. linphonec through Kamailio ----------------------------------------------

#: A R-URI on 127.0.0.1 without a port: port 5060 implied, see kamailio().
_PORTLESS = r'$ru =~ "^sips?:([^@;?]+@)?127\\.0\\.0\\.1([;?].*)?$"'


def kamailio(workdir, focus_port):
    """peers.Kamailio's registrar and proxy, also serving the port-less URIs on 127.0.0.1.

    liblinphone 5.1 drops ports from identity addresses: it subscribes to
    ``sip:conf1@127.0.0.1`` (the focus's Contact without its port) through
    its proxy, and its Contact is the registrar's pub-GRUU
    ``sip:carol@127.0.0.1;gr=...``, port-less too.  Both mean port 5060,
    where the interop recipe ran Kamailio; here Kamailio runs on a free
    port, so it takes them as its own: an initial request goes through the
    local part of the script (``conf*`` to the focus), an in-dialog one is
    looked up in usrloc (GRUU) after loose_route.
    """
    port = free_port()
    cfg = _KAMAILIO_CFG.format(host=HOST, port=port, focus_port=focus_port, children=2)
    edits = [
        ("\tif (uri == myself) {\n\t\tif (!lookup(\"location\")) {",
         f"\tif (uri == myself || {_PORTLESS}) {{\n\t\tif (!lookup(\"location\")) {{"),
        ("\t\tif (loose_route()) {\n\t\t\troute(RELAY);",
         f"\t\tif (loose_route()) {{\n\t\t\tif ({_PORTLESS} && !lookup(\"location\")) {{\n"
         f"\t\t\t\tsl_send_reply(\"404\", \"Not here\");\n\t\t\t\texit;\n\t\t\t}}\n"
         f"\t\t\troute(RELAY);"),
    ]
    for old, new in edits:
        assert cfg.count(old) == 1, old
        cfg = cfg.replace(old, new)
    return Kamailio(workdir, port, focus_port, cfg=cfg)


def test_linphonec_through_kamailio_subscribes_to_the_conference(focus, tmp_path):
    need("linphonec", "kamailio")
    kam = kamailio(tmp_path / "kam", focus.port)
    carol = Linphonec(tmp_path / "carol", "carol", free_port(),
                      register_via=f"{HOST}:{kam.port}")
    try:
        kam.start()
        carol.start()                      # waits for "registered: yes" (through Kamailio)
        carol.call(f"sip:conf1@{HOST}:{kam.port}")
        carol.wait_output(rf"Call \d+ with sip:conf1@{HOST}:{kam.port} connected", 10)

        # The focus sees one member and, once linphonec has subscribed on its own, one watcher.
        state = wait_for(lambda: (lambda r: r if r[0] == 200 and r[1]["subscriptions"] == 1
                                  and len(r[1]["members"]) == 1 else None)(
                                      conference(focus, "conf1")), timeout=8)
        assert state, conference(focus, "conf1")
        body = state[1]
        assert [(m["uri"], m["status"]) for m in body["members"]] == [
            (f"sip:carol@{HOST}", "connected")], body
        assert body["members"][0]["focus"] == f"sip:{focus.target}", body

        # liblinphone 5.1 moves its conference object to Created on the focus's full NOTIFY.
        created = wait_for(lambda: re.search(
            r"Switching conference \[\w+\] from state CreationPending to Created",
            carol.log_text()), timeout=5)
        assert created, "linphonec never reached conference state Created"

        sent = [(peer, msg) for out, peer, msg in linphone_messages(carol.log_text()) if out]
        invites = [msg for _, msg in sent if msg.startswith("INVITE ")]
        assert invites and invites[0].startswith(f"INVITE sip:conf1@{HOST}:{kam.port} "), invites
        subscribes = [(peer, msg) for peer, msg in sent if msg.startswith("SUBSCRIBE ")]
        assert subscribes, "linphonec sent no SUBSCRIBE"
        peer, first = subscribes[0]
        assert header(first, "Event") == "conference", first
        assert first.startswith(f"SUBSCRIBE sip:conf1@{HOST}"), first
        assert peer.lower() == f"udp://{HOST}:{kam.port}", peer      # through its proxy
        received = [msg for out, _, msg in linphone_messages(carol.log_text()) if not out]
        answers = [m for m in received if m.startswith("SIP/2.0 2")
                   and header(m, "CSeq").endswith(" SUBSCRIBE")]
        assert answers, "no 2xx to linphonec's SUBSCRIBE"
        notifies = [m for m in received if m.startswith("NOTIFY ")
                    and header(m, "Event") == "conference"]
        assert notifies, received
        assert header(notifies[0], "Subscription-State").startswith("active"), notifies[0]
        assert 'state="full"' in notifies[0], notifies[0]

        # It stays one member and one subscription while the call is up.
        time.sleep(1)
        status, body = conference(focus, "conf1")
        assert status == 200 and len(body["members"]) == 1 and body["subscriptions"] == 1, body

        carol.send("terminate")
        carol.wait_output(r"Call \d+ with .*conf1.* ended", 5)
        assert wait_for(lambda: members(focus, "conf1") == [], timeout=5), \
            conference(focus, "conf1")
        # linphonec unsubscribes (Expires: 0) on hangup.
        assert wait_for(lambda: (lambda r: r[0] == 404 or r[1]["subscriptions"] == 0)(
            conference(focus, "conf1")), timeout=5), conference(focus, "conf1")
        unsubscribes = [msg for out, _, msg in linphone_messages(carol.log_text())
                        if out and msg.startswith("SUBSCRIBE ") and header(msg, "Expires") == "0"]
        assert unsubscribes, "linphonec did not unsubscribe"
        assert focus.alive() and kam.alive()
        # Nobody in it and nobody watching: the focus forgets the conference.
        assert wait_for(lambda: conference(focus, "conf1")[0] == 404, timeout=5), \
            ("empty, unwatched conference still listed", conference(focus, "conf1"))
    finally:
        carol.stop()
        kam.stop()


# ---- 3. two baresip and a SIPp member ---------------------------------------------

def test_two_baresip_and_a_sipp_member_are_counted_exactly(focus, tmp_path):
    need("baresip", "sipp")
    alice, bob = baresip(tmp_path, "alice"), baresip(tmp_path, "bob")
    sipp = None
    try:
        alice.start()
        bob.start()
        sipp = Sipp("member.xml", focus.target, tmp_path,
                    ["-s", "room", "-m", "1", "-d", "8000", "-set", "wait_bye", "0"], timeout=30)
        alice.dial(f"sip:room@{focus.target}")
        bob.dial(f"sip:room@{focus.target}")
        alice.wait_event("CALL_ESTABLISHED", 8)
        bob.wait_event("CALL_ESTABLISHED", 8)
        expected = sorted([alice.aor, bob.aor, f"sip:member1@{HOST}:{sipp.port}"])

        joined = wait_for(lambda: (lambda ms: ms if len(ms) == 3 else None)(
            members(focus, "room")), timeout=5)
        assert joined, members(focus, "room")
        assert sorted(m["uri"] for m in joined) == expected, joined
        assert {m["status"] for m in joined} == {"connected"}, joined
        assert {m["focus"] for m in joined} == {f"sip:{focus.target}"}, joined
        status, body = conference(focus, "room")
        assert body["foci"][0]["members"] == 3 and body["subscriptions"] == 0, body
        summary = [c for c in api_get(focus.http, "/api/v1/conferences")[1] if c["name"] == "room"]
        assert [c["members"] for c in summary] == [3], summary

        # Still exactly three a little later (SIPp holds its call 8 s).
        time.sleep(2)
        assert sorted(m["uri"] for m in members(focus, "room")) == expected
        assert len(alice.calls()) == 1 and len(bob.calls()) == 1

        alice.hangup()
        alice.wait_event("CALL_CLOSED", 5)
        assert wait_for(lambda: sorted(m["uri"] for m in members(focus, "room")) == sorted(
            [bob.aor, f"sip:member1@{HOST}:{sipp.port}"]), timeout=5), members(focus, "room")
        bob.hangup()
        bob.wait_event("CALL_CLOSED", 5)
        assert sipp.wait() == 0, sipp.errors()       # hangs up by itself after 8 s
        contacts = [line for line in sipp.logs() if line.startswith("contact ")]
        assert len(contacts) == 1 and f"<sip:room@{focus.target}>;isfocus" in contacts[0]
        assert wait_for(lambda: members(focus, "room") == [], timeout=5), members(focus, "room")
        assert wait_for(lambda: conference(focus, "room")[0] == 404, timeout=5)
        assert focus.alive()
    finally:
        if sipp is not None:
            sipp.kill()
        alice.stop()
        bob.stop()


@pytest.mark.slow
def test_linphonec_session_timer_is_answered_and_its_update_refreshes_it(focus, tmp_path):
    """RFC 4028 with a real phone: linphonec asks for a session timer; the
    focus's 200 carries Session-Expires (and Require: timer when the phone
    refreshes), and the UPDATE (RFC 3311) it refreshes with gets 200 with
    Session-Expires, not 405; the call stays up past the interval."""
    need("linphonec")
    dave = Linphonec(tmp_path / "dave", "dave", free_port(), session_expires=90)
    try:
        dave.start()
        dave.call(f"sip:timers@{HOST}:{focus.port}")
        dave.wait_output(rf"Call \d+ with sip:timers@{HOST}:{focus.port} connected", 10)
        sent = [m for out, _, m in linphone_messages(dave.log_text()) if out]
        invite = next(m for m in sent if m.startswith("INVITE "))
        asked = header(invite, "Session-Expires")
        assert asked, "linphonec asked for no session timer"
        interval = int(asked.split(";")[0])
        received = [m for out, _, m in linphone_messages(dave.log_text()) if not out]
        ok = next(m for m in received if m.startswith("SIP/2.0 200")
                  and header(m, "CSeq").endswith(" INVITE"))
        granted = header(ok, "Session-Expires")
        assert granted and int(granted.split(";")[0]) == interval, ok
        if "refresher=uac" in granted:
            assert header(ok, "Require") == "timer", ok

        def refreshed():                # linphonec 5.1 refreshes with UPDATE
            messages = linphone_messages(dave.log_text())
            return [m for out, _, m in messages if not out and m.startswith("SIP/2.0 ")
                    and header(m, "CSeq").endswith(" UPDATE")]
        answers = wait_for(refreshed, timeout=interval / 2 + 15)
        assert answers, "linphonec sent no UPDATE refresh"
        assert all(a.startswith("SIP/2.0 200") for a in answers), answers
        assert header(answers[0], "Session-Expires"), answers[0]
        assert members(focus, "timers") and len(members(focus, "timers")) == 1
    finally:
        dave.stop()
