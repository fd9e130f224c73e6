"""Nobody gets in uninvited: digest authentication, members-only rooms,
authorised Replaces and REFER, conference state only to those allowed, and
foci proven by a shared secret.  Every refusal is checked from the wire
(the response a real ``twistd mfocus`` sends, what reaches the phones) and
from the API."""

import re
import ssl
import time

import pytest

from . import sipclient
from .certs import make_ca_and_leaf
from .credentials import PASSWORDS, REALM, auth_config
from .foci import Node, proof_config, start_foci, stop_all
from .harness import Sipp, free_port, wait_for
from .pcap import Capture, sip_messages
from .peers import Linphonec, tone_phone
from .peers.process import need


def register(client, node, user, authorization=None, cseq=1, call_id=None):
    headers = [("Expires", "60")] + ([("Authorization", authorization)] if authorization else [])
    uri = f"sip:127.0.0.1:{node.port}"
    return client.ask(sipclient.request(
        "REGISTER", uri, client.port, headers=headers, cseq=cseq, call_id=call_id,
        from_uri=f"sip:{user}@127.0.0.1:{node.port}", to_uri=f"sip:{user}@127.0.0.1:{node.port}"),
        node.port)


def test_registration_needs_the_users_password(tmp_path):
    """baresip alice registers with her password and receives her calls; a
    client without credentials or with a wrong one cannot register (401),
    and calls for alice still reach her phone; a replayed Authorization
    (same nonce and nc) is refused; an expired nonce is answered
    stale=true; baresip's refreshes, past the nonce lifetime, keep it
    registered by itself."""
    need("baresip", "dumpcap")
    node = Node("agent", "agent", 20, tmp_path, auth_config(tmp_path, extra=(
        "nonce_lifetime = 3\n[agent]\nusers = alice carol\n"))).start()
    alice = tone_phone(tmp_path, "alice", register_at=f"127.0.0.1:{node.port}",
                       outbound=f"sip:127.0.0.1:{node.port}", password=PASSWORDS["alice"],
                       regint=5)
    bob = tone_phone(tmp_path, "bob")
    capture = Capture(str(tmp_path / "sip.pcap"), ports=[node.port])
    attacker = sipclient.UDP()
    try:
        alice.start()
        alice.wait_registered()
        status, challenge = register(attacker, node, "alice")
        assert status == 401
        assert 'algorithm=MD5' in sipclient.header(challenge, "WWW-Authenticate")
        wrong = sipclient.digest(sipclient.header(challenge, "WWW-Authenticate"), "REGISTER",
                                 f"sip:127.0.0.1:{node.port}", "alice", "guess")
        status, _ = register(attacker, node, "alice", wrong, cseq=2)
        assert status == 401
        # Calls for alice still reach her real phone.
        bob.start()
        bob.dial(f"sip:alice@127.0.0.1:{node.port}")
        bob.wait_event("CALL_ESTABLISHED", 8)
        alice.wait_event("CALL_ESTABLISHED", 8)
        assert attacker.receive(0.5) == []              # nothing for alice came here
        bob.hangup()
        # Replay: a valid Authorization for carol is taken once per nonce and nc.
        carol = sipclient.UDP()
        status, challenge = register(carol, node, "carol", call_id="carol-reg")
        good = sipclient.digest(sipclient.header(challenge, "WWW-Authenticate"), "REGISTER",
                                f"sip:127.0.0.1:{node.port}", "carol", PASSWORDS["carol"])
        assert register(carol, node, "carol", good, cseq=2, call_id="carol-reg")[0] == 200
        status, again = register(carol, node, "carol", good, cseq=3, call_id="carol-reg")
        assert status == 401 and "stale=true" not in again
        # An expired nonce: stale=true, so a phone re-authenticates silently.
        status, challenge = register(carol, node, "carol", cseq=4, call_id="carol-reg")
        late = sipclient.digest(sipclient.header(challenge, "WWW-Authenticate"), "REGISTER",
                                f"sip:127.0.0.1:{node.port}", "carol", PASSWORDS["carol"])
        time.sleep(3.5)
        status, stale = register(carol, node, "carol", late, cseq=5, call_id="carol-reg")
        assert status == 401 and "stale=true" in sipclient.header(stale, "WWW-Authenticate")
        time.sleep(6)                       # baresip refreshes every 5 s
        assert alice.registered()[0]
        carol.close()
    finally:
        capture.stop()
        attacker.close()
        for p in (alice, bob):
            p.stop()
        stop_all([node])
    alice_port = alice.sip_port
    answers = [m.decode("utf-8", "replace") for _, sport, dport, m in
               sip_messages(capture.path) if dport == alice_port and sport == node.port]
    register_answers = [a.split("\r\n", 1)[0] for a in answers
                        if "REGISTER" in (sipclient.header(a, "CSeq") or "")]
    # baresip 1.x asks afresh at each refresh (it keeps no nonce, so it never
    # presents an expired one): every refresh, long past the 3 s nonce
    # lifetime, was challenged and then accepted.
    assert register_answers.count("SIP/2.0 200 OK") >= 3, register_answers
    assert all(a == "SIP/2.0 401 Unauthorized" for a in register_answers[0::2]), \
        register_answers


def test_a_members_only_room_admits_its_members_by_digest(tmp_path):
    """[room:board] members = alice, bob: alice (her password) joins; carol
    (no credentials for board) gets 401 and is never listed."""
    need("baresip")
    node = Node("focus", "primary", 20, tmp_path, auth_config(tmp_path, extra=(
        "[room:board]\nmembers = alice, bob\n"))).start()
    alice = tone_phone(tmp_path, "alice", password=PASSWORDS["alice"])
    carol = tone_phone(tmp_path, "carol")
    seen = []
    try:
        alice.start()
        alice.dial(f"sip:board@127.0.0.1:{node.port}")
        alice.wait_event("CALL_ESTABLISHED", 8)
        carol.start()
        carol.dial(f"sip:board@127.0.0.1:{node.port}")
        closed = carol.wait_event("CALL_CLOSED", 8)
        assert "401" in str(closed) or "Unauthorized" in str(closed), closed
        for _ in range(10):
            view = node.conference("board")
            seen.extend(m["uri"] for m in view["members"])
            time.sleep(0.1)
        assert carol.events("CALL_ESTABLISHED") == []
    finally:
        for p in (alice, carol):
            p.stop()
        stop_all([node])
    assert seen and all(uri.startswith("sip:alice@") for uri in seen), seen


def test_replaces_refer_and_dialog_ids_need_the_party(tmp_path):
    """An outsider who read a member's dialog ids sends INVITE with Replaces:
    403, the member keeps its call; a stranger's SUBSCRIBE gets no dialog
    ids; a REFER with a member's From from a non-member, and a member's REFER
    to an address outside our domain, are refused and nothing is dialled."""
    need("sipp")
    node = Node("focus", "primary", 20, tmp_path).start()
    member = Sipp("member.xml", f"127.0.0.1:{node.port}", tmp_path,
                  ["-s", "room", "-m", "1", "-d", "8000", "-set", "wait_bye", "0"])
    outsider = sipclient.UDP()
    target = sipclient.UDP()                 # whom a forged REFER would make us dial
    try:
        assert wait_for(lambda: len((node.conference("room") or {"members": []})["members"])
                        == 1, timeout=8)
        invite = next(m for m in member.messages(received=False) if m.startswith("INVITE "))
        ok = wait_for(lambda: next((m for m in member.messages(received=True)
                                    if m.startswith("SIP/2.0 200") and "INVITE" in
                                    (sipclient.header(m, "CSeq") or "")), None))
        call_id = sipclient.header(invite, "Call-ID")
        from_tag = sipclient.header(invite, "From").split("tag=")[1].split(";")[0]
        to_tag = sipclient.header(ok, "To").split("tag=")[1].split(";")[0]
        # A stranger's subscription: users and endpoints, no dialog ids.
        status, _ = outsider.ask(sipclient.request(
            "SUBSCRIBE", f"sip:room@127.0.0.1:{node.port}", outsider.port,
            headers=[("Event", "conference"), ("Expires", "60")]), node.port)
        assert status == 200
        notify = wait_for(lambda: next((m for m in outsider.receive(0.2)
                                        if m.startswith("NOTIFY ")), None), timeout=5)
        assert notify and "<endpoint entity=" in notify
        assert "call-info" not in notify and call_id not in notify
        # The ids read anyway (as a member could): Replaces from elsewhere is refused.
        status, refusal = outsider.ask(sipclient.request(
            "INVITE", f"sip:room@127.0.0.1:{node.port}", outsider.port, body=sipclient.SDP,
            headers=[("Replaces", f"{call_id};to-tag={to_tag};from-tag={from_tag}")]),
            node.port)
        assert status == 403, refusal
        # REFER with the member's From, from outside its call: refused.
        member_from = re.search(r"<([^>]+)>", sipclient.header(invite, "From")).group(1)
        status, _ = outsider.ask(sipclient.request(
            "REFER", f"sip:room@127.0.0.1:{node.port}", outsider.port, from_uri=member_from,
            headers=[("Refer-To", f"<sip:victim@127.0.0.1:{target.port}>")]), node.port)
        assert status == 403
        assert target.receive(1.0) == []                # nothing was dialled
        # A member's own REFER, in its call, to an address outside our
        # domain (refer_targets = domain): refused, nothing dialled.
        phone, outside = sipclient.UDP(), sipclient.UDP(host="127.0.0.2")
        try:
            call, tag = "phone-call", "phonetag"
            status, ok = phone.ask(sipclient.request(
                "INVITE", f"sip:room@127.0.0.1:{node.port}", phone.port, body=sipclient.SDP,
                call_id=call, from_tag=tag), node.port)
            assert status == 200
            focus_tag = sipclient.header(ok, "To").split("tag=")[1].split(";")[0]
            phone.send(sipclient.request("ACK", f"sip:room@127.0.0.1:{node.port}", phone.port,
                                         call_id=call, from_tag=tag, to_tag=focus_tag), node.port)
            assert wait_for(lambda: len(node.conference("room")["members"]) == 2, timeout=5)
            status, refusal = phone.ask(sipclient.request(
                "REFER", f"sip:room@127.0.0.1:{node.port}", phone.port, call_id=call,
                from_tag=tag, to_tag=focus_tag, cseq=2,
                headers=[("Refer-To", f"<sip:far@127.0.0.2:{outside.port}>")]), node.port)
            assert status == 403 and "Outside Our Domain" in refusal.split("\r\n", 1)[0]
            assert outside.receive(1.0) == []           # nothing was dialled
        finally:
            phone.close()
            outside.close()
        members = [m for m in node.conference("room")["members"]
                   if m["uri"].startswith("sip:member")]
        assert len(members) == 1 and members[0]["status"] == "connected"
        assert member.wait() == 0, member.errors()      # its call ran to its end
        assert not any(m.startswith("BYE ") for m in member.messages(received=True))
    finally:
        outsider.close()
        target.close()
        stop_all([node], member)


@pytest.mark.parametrize("transport", ["UDP", "TCP"])
def test_a_fake_focus_gets_403_and_no_state(tmp_path, transport):
    """With a shared secret, a process on the same host that is not a focus
    (even bound to a peer's listening port while that peer is down) gets
    403 for a multifocus SUBSCRIBE, a forwarded REFER and a cascade INVITE,
    receives no state, makes nobody be dialled; the API is unchanged."""
    need("sipp")
    nodes = start_foci(tmp_path, [("primary", "primary", 5), ("s1", "secondary", 5)],
                       proof_config(tmp_path, "secret"))
    primary, s1 = nodes
    member = Sipp("member.xml", f"127.0.0.1:{primary.port}", tmp_path,
                  ["-s", "room", "-m", "1", "-d", "6000", "-set", "wait_bye", "0"])
    target = sipclient.UDP()
    try:
        assert wait_for(lambda: len((primary.conference("room") or {"members": []})[
            "members"]) == 1, timeout=8)
        before = primary.conference("room")
        s1.stop()                                    # its port is free: the fake takes it
        fake = sipclient.UDP(s1.port) if transport == "UDP" else sipclient.TCP(primary.port)
        ask = (lambda data: fake.ask(data, primary.port)) if transport == "UDP" else fake.ask
        local = fake.port
        ruri = f"sip:room@127.0.0.1:{primary.port}"
        requests = {
            "multifocus SUBSCRIBE": sipclient.request(
                "SUBSCRIBE", ruri, local, transport, from_uri=f"sip:127.0.0.1:{s1.port}",
                headers=[("Event", "inet-ci-multifocus-ext"), ("Expires", "600"),
                         ("Accept", "application/inet-ci-multifocus-ext+xml")]),
            "forwarded REFER": sipclient.request(
                "REFER", ruri, local, transport, from_uri=f"sip:127.0.0.1:{s1.port}",
                headers=[("Refer-To", f"<sip:victim@127.0.0.1:{target.port}>"),
                         ("X-Mfocus-Forwarded", f"<sip:127.0.0.1:{s1.port}>;hops=1"),
                         ("Referred-By", f"<sip:127.0.0.1:{s1.port}>")]),
            "cascade INVITE": sipclient.request(
                "INVITE", ruri, local, transport, from_uri=f"sip:127.0.0.1:{s1.port}",
                body=sipclient.SDP, headers=[("X-Mfocus-Cascade", f"<sip:127.0.0.1:{s1.port}>")]),
        }
        for what, data in requests.items():
            status, answer = ask(data)
            assert status == 403, (what, answer)
            assert "conference-info" not in answer
        # A multifocus NOTIFY claiming a ghost member and the primary down,
        # outside any subscription (the fake has none): 481, nothing changes.
        ghost = (b'<?xml version="1.0"?><conference-info xmlns="urn:ietf:params:xml:ns:'
                 b'conference-info" entity="sip:room@127.0.0.1" state="full" version="1"/>')
        notify = sipclient.request(
            "NOTIFY", ruri, local, transport, from_uri=f"sip:127.0.0.1:{s1.port}",
            to_tag="guessed", body=ghost,
            headers=[("Event", "inet-ci-multifocus-ext"), ("Subscription-State", "active")])
        status, _ = ask(notify)
        assert status in (403, 481)
        if transport == "UDP":
            assert not [m for m in fake.receive(1.0) if m.startswith("NOTIFY ")]
        assert target.receive(1.0) == []              # nobody was dialled
        after = primary.conference("room")
        assert after["members"] == before["members"] and after["cascades"] == []
        assert [f["uri"] for f in after["foci"]] == [f["uri"] for f in before["foci"]]
        fake.close()
    finally:
        target.close()
        stop_all(nodes, member)


@pytest.mark.parametrize("algorithms,expect", [("MD5", "MD5"), ("SHA-256 MD5", "SHA-256")])
def test_linphonec_registers_with_digest(tmp_path, algorithms, expect):
    """linphonec registers to an agent with its password, by MD5, and by
    SHA-256 when that is offered first (RFC 8760)."""
    need("linphonec", "dumpcap")
    node = Node("agent", "agent", 20, tmp_path, auth_config(tmp_path, algorithms, extra=(
        "[agent]\nusers = carol\n"))).start()
    capture = Capture(str(tmp_path / "sip.pcap"), ports=[node.port])
    carol = Linphonec(tmp_path / "carol", "carol", free_port(),
                      register_via=f"127.0.0.1:{node.port}", password=PASSWORDS["carol"],
                      realm=REALM, algorithm=expect)
    try:
        carol.start()                          # waits for "registered: yes"
    finally:
        carol.stop()
        capture.stop()
        stop_all([node])
    registers = [m.decode("utf-8", "replace") for _, _, dport, m in sip_messages(capture.path)
                 if dport == node.port and m.startswith(b"REGISTER ")]
    signed = [sipclient.header(m, "Authorization") for m in registers
              if sipclient.header(m, "Authorization")]
    assert signed and all(f"algorithm={expect}" in a.replace('"', "") for a in signed), signed


def test_a_peer_certificate_proves_a_focus_over_tls(tmp_path):
    """With a secret, address counts for nothing; over TLS a client
    certificate, verified against [tls] ca, that names a configured peer's
    host proves that peer: its multifocus SUBSCRIBE is taken (200); one
    without a certificate, or with one naming another host, gets 403."""
    paths = make_ca_and_leaf(tmp_path, leaves=[("peer", "peer.example", "127.0.0.1"),
                                              ("stranger", "stranger.example", None)])
    peer_port = free_port()
    node = Node("focus", "primary", 5, tmp_path, proof_config(tmp_path, "secret") + (
        f"[tls]\ncertificate = {paths['cert']}\nkey = {paths['key']}\nca = {paths['ca']}\n"),
        peers=[f"sip:127.0.0.1:{peer_port}"])
    tls_port = free_port()
    node.extra_listen = [f"tls:127.0.0.1:{tls_port}"]
    node.start()

    def subscribe(cert):
        context = ssl.create_default_context(cafile=paths["ca"])
        if cert:
            context.load_cert_chain(paths[f"{cert}-cert"], paths[f"{cert}-key"])
        client = sipclient.TCP(tls_port, tls=context)
        try:
            return client.ask(sipclient.request(
                "SUBSCRIBE", f"sip:room@127.0.0.1:{tls_port}", client.port, "TLS",
                from_uri=f"sip:127.0.0.1:{peer_port}",
                headers=[("Event", "inet-ci-multifocus-ext"), ("Expires", "600"),
                         ("Accept", "application/inet-ci-multifocus-ext+xml")]))[0]
        finally:
            client.close()
    try:
        assert subscribe(None) == 403
        assert subscribe("stranger") == 403
        assert subscribe("peer") == 200
    finally:
        stop_all([node])
