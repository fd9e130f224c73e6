"""Agent mode (issue 7): a two-party call through mfocus becomes a
conference when a third party calls (302 + isfocus), with real phones."""

import re
import time

from twisted_mfocus.conference import info

from .credentials import PASSWORDS, auth_config
from .foci import Node, stop_all
from .harness import Sipp, notify_documents, wait_for
from .pcap import Capture, sip_messages
from .peers import tone_phone
from .peers.process import need
from .test_audio import assert_each_hears_the_others, rtp_filter

TONES = {"alice": 440, "bob": 1000, "carol": 1500, "dave": 2000}


def agent(tmp_path, extra=""):
    """An agent serving alice (credentials.py: MD5, for baresip 1.x)."""
    node = Node("agent", "agent", 20, tmp_path,
                auth_config(tmp_path, extra="[agent]\nusers = alice\n" + extra))
    return node.start()


def phone(tmp_path, name, register_at=None):
    """A tone phone; registered at ``register_at`` (then also its outbound
    proxy) with its password."""
    return tone_phone(tmp_path, name, TONES[name], rtp_span=4, register_at=register_at,
                      outbound=register_at and f"sip:{register_at}",
                      password=register_at and PASSWORDS.get(name))


def conference_of(node, user):
    """The conference at ``node`` whose members include ``user`` (a name)."""
    for row in node.api("/api/v1/conferences") or []:
        view = node.conference(row["name"])
        if view and any(m["uri"].startswith(f"sip:{user}@") for m in view["members"]):
            return view
    return None


def test_a_third_caller_turns_the_call_into_a_conference(tmp_path, schema):
    need("baresip", "dumpcap")
    node = agent(tmp_path, "[media]\nspeakers = 0\n")     # four tones at once, all mixed
    alice = phone(tmp_path, "alice", register_at=f"127.0.0.1:{node.port}")
    bob, carol, dave = (phone(tmp_path, name) for name in ("bob", "carol", "dave"))
    phones = [alice, bob, carol, dave]
    capture = Capture(str(tmp_path / "rtp.pcap"),
                      bpf=f"{rtp_filter(phones)} or (udp port {node.port})")
    try:
        for p in phones:
            p.start()
        alice.wait_registered()
        # Bob calls alice: her phone rings (auto-answer), they talk through mfocus.
        bob.dial(f"sip:alice@127.0.0.1:{node.port}")
        bob.wait_event("CALL_ESTABLISHED", 8)
        alice.wait_event("CALL_ESTABLISHED", 8)
        calls = {p.name: [e.get("id") for e in p.events("CALL_ESTABLISHED")]
                 for p in (alice, bob)}
        assert all(len(c) == 1 and c[0] for c in calls.values()), calls
        call = conference_of(node, "alice")
        assert call is not None and len(call["members"]) == 2
        # Carol calls alice, is redirected (302, Contact: the call's
        # conference URI;isfocus) and follows it (baresip does by itself);
        # then dave, the same way.
        for p, count in ((carol, 1), (dave, 2)):
            p.dial(f"sip:alice@127.0.0.1:{node.port}")
            p.wait_event("CALL_ESTABLISHED", 8)
            assert node.process.log().count(f"redirecting to {call['uri']}") == count
        assert wait_for(lambda: len(node.conference(call["name"])["members"]) == 4, timeout=10)
        time.sleep(4)
        end = time.time()
        view = node.conference(call["name"])
        # Alice's and bob's calls were never dropped: the one call each
        # began with is still up (no other established, none closed).
        for p in (alice, bob):
            assert [e.get("id") for e in p.events("CALL_ESTABLISHED")] == calls[p.name]
            assert p.events("CALL_CLOSED") == [] and len(p.calls()) == 1, p.name
        assert sorted(m["uri"].split("@")[0] for m in view["members"]) == [
            "sip:alice", "sip:bob", "sip:carol", "sip:dave"]
        assert {m["focus"] for m in view["members"]} == {node.uri}
        # The conference-info a phone gets by SUBSCRIBE: all four, with
        # alice's mfocus as the focus (RFC 4575 §5.3: the entity).
        watcher = Sipp("subscriber.xml", f"127.0.0.1:{node.port}", tmp_path,
                       ["-s", call["name"], "-m", "1", "-set", "expires", "60", "-set",
                        "partials", "0", "-set", "refresh", "0", "-set", "unsubscribe", "1"],
                       timeout=20)
        assert watcher.wait() == 0, watcher.logs()
        (_, doc), *_ = notify_documents(watcher, schema)
        assert doc.get("entity") == call["uri"]
        users = doc.xpath("//ci:user/@entity", namespaces={"ci": info.NAMESPACE})
        assert sorted(u.split("@")[0] for u in users) == [
            "sip:alice", "sip:bob", "sip:carol", "sip:dave"]
    finally:
        capture.stop()
        for p in phones:
            p.stop()
        stop_all([node])
    assert_each_hears_the_others(capture.path, phones, end, TONES)
    # The first two calls were refreshed by a re-INVITE (To tag: in the
    # dialog) whose Contact is the conference URI with isfocus.
    reinvites = [m for _, sport, _, m in sip_messages(capture.path)
                 if sport == node.port and m.startswith(b"INVITE ")
                 and re.search(rb"\r\nTo:[^\r]*;tag=", m)]
    assert len(reinvites) == 2, [m[:300] for m in reinvites]
    for m in reinvites:
        assert f"\r\nContact: <{call['uri']}>;isfocus\r\n".encode() in m, m[:600]


def probe(tmp_path, node, method, user, name):
    """One SIPp request (tests/sipp/agent_probe.xml): its 'final ...' line."""
    sipp = Sipp("agent_probe.xml", f"127.0.0.1:{node.port}", tmp_path,
                ["-s", user, "-m", "1", "-set", "method", method], timeout=20, name=name)
    assert sipp.wait() == 0, (name, sipp.logs())
    return next(line for line in sipp.logs() if line.startswith("final "))


def test_sipp_sees_the_redirect_and_the_refusals(tmp_path):
    need("sipp", "baresip")
    node = agent(tmp_path)
    alice = phone(tmp_path, "alice", register_at=f"127.0.0.1:{node.port}")
    bob = phone(tmp_path, "bob")
    member = None
    try:
        # A stranger's REGISTER is challenged like alice's: who is served is
        # not told (a digest that is not alice's own is 403 after that).
        assert probe(tmp_path, node, "REGISTER", "mallory", "reg").startswith("final 401")
        assert probe(tmp_path, node, "REGISTER", "alice", "reg-alice").startswith("final 401")
        # A user nobody serves and a served user not registered: the same answer.
        assert probe(tmp_path, node, "INVITE", "zed", "unknown").startswith("final 480")
        assert probe(tmp_path, node, "INVITE", "alice", "unbound").startswith("final 480")
        for p in (alice, bob):
            p.start()
        alice.wait_registered()
        bob.dial(f"sip:alice@127.0.0.1:{node.port}")
        bob.wait_event("CALL_ESTABLISHED", 8)
        # Alice is busy: 302, Contact <conference URI>;isfocus ...
        line = probe(tmp_path, node, "INVITE", "alice", "busy")
        m = re.fullmatch(r"final 302 contact <sip:(conf-[a-z0-9]+)@127\.0\.0\.1:(\d+)>;isfocus",
                         line)
        assert m and int(m.group(2)) == node.port, line
        # ... a URI that answers INVITE: the caller joins the conference.
        member = Sipp("member_dialin.xml", f"127.0.0.1:{node.port}", tmp_path,
                      ["-s", m.group(1), "-m", "1", "-set", "hold_ms", "30000"], timeout=60)
        assert wait_for(lambda: any(x.startswith("joined ") for x in member.logs()), timeout=10)
        assert wait_for(lambda: len(node.conference(m.group(1))["members"]) == 3, timeout=10)
    finally:
        for p in (alice, bob):
            p.stop()
        stop_all([node], *([member] if member else []))


def test_when_hosting_busy_a_hosting_user_is_busy(tmp_path):
    """[agent] when_hosting = busy: once alice's call is a conference, a new
    caller for her gets 486 instead of the redirect."""
    need("sipp", "baresip")
    node = agent(tmp_path, "when_hosting = busy\n")
    alice = phone(tmp_path, "alice", register_at=f"127.0.0.1:{node.port}")
    bob, carol = phone(tmp_path, "bob"), phone(tmp_path, "carol")
    try:
        for p in (alice, bob, carol):
            p.start()
        alice.wait_registered()
        bob.dial(f"sip:alice@127.0.0.1:{node.port}")
        bob.wait_event("CALL_ESTABLISHED", 8)
        # In a two-party call she still redirects (the call becomes hers to host) ...
        carol.dial(f"sip:alice@127.0.0.1:{node.port}")
        carol.wait_event("CALL_ESTABLISHED", 8)
        assert wait_for(lambda: len(conference_of(node, "alice")["members"]) == 3, timeout=10)
        # ... and now she hosts a conference: busy.
        assert probe(tmp_path, node, "INVITE", "alice", "hosting").startswith("final 486")
    finally:
        for p in (alice, bob, carol):
            p.stop()
        stop_all([node])


def test_a_served_users_own_call_goes_out_through_the_agent(tmp_path):
    """Alice (registered; the agent is her outbound proxy) calls bob, who
    knows nothing of mfocus: the agent carries the call as alice's AOR;
    carol then calls alice and is redirected into the conference."""
    need("baresip", "dumpcap")
    node = agent(tmp_path)
    alice = phone(tmp_path, "alice", register_at=f"127.0.0.1:{node.port}")
    bob, carol = phone(tmp_path, "bob"), phone(tmp_path, "carol")
    phones = [alice, bob, carol]
    capture = Capture(str(tmp_path / "rtp.pcap"), bpf=rtp_filter(phones))
    try:
        for p in phones:
            p.start()
        alice.wait_registered()
        alice.dial(bob.aor)
        alice.wait_event("CALL_ESTABLISHED", 8)
        incoming = bob.wait_event("CALL_ESTABLISHED", 8)
        assert f"127.0.0.1:{node.port}" in str(incoming) or conference_of(node, "bob")
        call = conference_of(node, "alice")
        assert call is not None and len(call["members"]) == 2, call
        carol.dial(f"sip:alice@127.0.0.1:{node.port}")
        carol.wait_event("CALL_ESTABLISHED", 8)
        assert wait_for(lambda: len(node.conference(call["name"])["members"]) == 3, timeout=10)
        time.sleep(4)
        end = time.time()
    finally:
        capture.stop()
        for p in phones:
            p.stop()
        stop_all([node])
    assert_each_hears_the_others(capture.path, phones, end, TONES)


def test_a_caller_that_cancels_stops_the_ringing_phone(tmp_path):
    """RFC 3261 §9.2 through the B2BUA: bob CANCELs while alice's phone
    (answering by hand) rings: bob's INVITE gets 487 and alice's phone
    stops ringing."""
    need("baresip")
    node = agent(tmp_path)
    alice = tone_phone(tmp_path, "alice", register_at=f"127.0.0.1:{node.port}",
                       answer="manual", password=PASSWORDS["alice"])
    bob = phone(tmp_path, "bob")
    try:
        for p in (alice, bob):
            p.start()
        alice.wait_registered()
        bob.dial(f"sip:alice@127.0.0.1:{node.port}")
        alice.wait_event("CALL_INCOMING", 8)
        bob.wait_event("CALL_RINGING", 8)        # a CANCEL needs a provisional (§9.1)
        bob.hangup()                             # still ringing: a CANCEL
        bob.wait_event("CALL_CLOSED", 8)
        alice.wait_event("CALL_CLOSED", 8)       # her phone stopped ringing
        assert alice.events("CALL_ESTABLISHED") == [] and alice.calls() == []
        assert wait_for(lambda: conference_of(node, "alice") is None, timeout=5)
        assert "the caller cancelled: 487, cancelling the phone" in node.process.log()
    finally:
        for p in (alice, bob):
            p.stop()
        stop_all([node])
