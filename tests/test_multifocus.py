"""Many foci, one conference: real ``twistd mfocus`` processes on loopback.

Members are SIPp (tests/sipp/member_dialin.xml dials in; the member's
Contact points at a member_handover.xml SIPp, which takes the INVITE a
secondary focus sends and later BYEs through the Record-Route).  What is
asserted comes from the members' side (SIPp logs and message traces) and
from every focus's API.
"""

import collections
import re
import time

import pytest

from .foci import proof_config, shared_view, start_all, start_foci, stop_all, wait_agreement
from .harness import Sipp, free_port, sip_header, wait_for

CONF = "conf1"


@pytest.mark.parametrize("proof", ["address", "secret"])
def test_seven_members_spread_over_three_foci(tmp_path, capsys, proof):
    """Discovery, delegation and interception; foci trusted by address on
    loopback, or by the proof of a shared secret (trust.py)."""
    nodes = start_foci(tmp_path, [("primary", "primary", 2), ("s1", "secondary", 3),
                                  ("s2", "secondary", 3)], proof_config(tmp_path, proof))
    primary = nodes[0]
    by_uri = {node.uri: node for node in nodes}
    uas = Sipp("member_handover.xml", None, tmp_path, ["-set", "hold_ms", "8000"],
               timeout=90)
    uac = Sipp("member_dialin.xml", f"127.0.0.1:{primary.port}", tmp_path,
               ["-s", CONF, "-m", "7", "-l", "7", "-r", "2", "-set", "hold_ms", "16000",
                "-set", "contact_port", str(uas.port)], timeout=90)
    try:
        view, lag = wait_agreement(
            nodes, CONF, lambda v: len(v[0]) == 7 and len(v[1]) == 3 and
            all(f[3] <= f[2] for f in v[1]), timeout=40)
        assert view is not None, [node.conference(CONF) for node in nodes]
        with capsys.disabled():
            print(f"\n  all three APIs agreed {lag:.3f} s after the first showed the final state")
        members, foci = view
        # All 7 are connected, each once, spread within every capacity, each
        # under its own address (the From of its dial-in), not its Contact.
        assert sorted(m[0] for m in members) == \
            sorted(f"sip:member{i}@127.0.0.1:{uac.port}" for i in range(1, 8))
        assert all(m[3] == "connected" for m in members)
        held = collections.Counter(m[2] for m in members)
        assert held[primary.uri] <= 2 and sum(held.values()) == 7
        assert {f[0]: (f[1], f[2]) for f in foci} == {
            node.uri: (node.role, node.capacity) for node in nodes}
        holder_of = {m[0].split("@")[0].split(":")[1]: m[2] for m in members}

        # Each secondary-held member's BYE goes to its secondary (Route
        # header and destination), and is answered 200 there.
        moved = {user for user, uri in holder_of.items() if uri != primary.uri}
        assert len(moved) >= 5
        byes = wait_for(lambda: [m for m in uas.messages(received=False)
                                 if m.startswith("BYE ")] if len(
            [m for m in uas.messages(received=False) if m.startswith("BYE ")]) >= len(moved)
            else None, timeout=30)
        assert byes, uas.logs()
        log = "\n".join(uas.logs())
        for bye in byes:
            user = re.search(r"<sip:(member\d+)@", sip_header(bye, "From")).group(1)
            holder = by_uri[holder_of[user]]
            assert bye.split("\n")[0].strip() == f"BYE sip:{CONF}@127.0.0.1:{primary.port} SIP/2.0"
            assert sip_header(bye, "Route") == f"<sip:127.0.0.1:{holder.port};lr;transport=udp>"
        assert log.count("bye-to 127.0.0.1:") == len(moved)
        for user in moved:
            assert f"bye-to 127.0.0.1:{by_uri[holder_of[user]].port}" in log
        # Wait for the last BYE's answer before counting answers.
        assert wait_for(lambda: "\n".join(uas.logs()).count("hangup ") >= len(moved),
                        timeout=10), uas.logs()
        log = "\n".join(uas.logs())
        assert log.count("hangup 200") == len(moved), log
        # Every replaced first call was ended (by the primary, at the Contact).
        assert log.count("old-dialog-bye") == len(moved)
        left, _ = wait_agreement(nodes, CONF, lambda v: len(v[0]) == 7 - len(moved),
                                 timeout=15)
        assert left is not None
        assert {m[2] for m in left[0]} == {primary.uri}
    finally:
        stop_all(nodes, uac, uas)


def test_discovery_skips_a_plain_phone_and_builds_a_full_mesh(tmp_path):
    phone = Sipp("plain_phone.xml", None, tmp_path, timeout=60)
    nodes = start_foci(tmp_path, [("primary", "primary", 1), ("s1", "secondary", 1),
                                  ("s2", "secondary", 3)], start=False)
    primary = nodes[0]
    primary.peers.insert(0, f"sip:127.0.0.1:{phone.port}")     # the first candidate
    start_all(nodes)
    uas = Sipp("member_handover.xml", None, tmp_path, ["-set", "hold_ms", "20000"],
               timeout=60)
    uac = Sipp("member_dialin.xml", f"127.0.0.1:{primary.port}", tmp_path,
               ["-s", CONF, "-m", "3", "-l", "3", "-r", "1", "-set", "hold_ms", "20000",
                "-set", "contact_port", str(uas.port)], timeout=60)
    try:
        view, _ = wait_agreement(nodes, CONF, lambda v: len(v[0]) == 3 and len(v[1]) == 3,
                                 timeout=30)
        assert view is not None, [node.conference(CONF) for node in nodes]
        # The phone was asked first and refused with 489; it is no focus.
        assert any(line.startswith("subscribe inet-ci-multifocus-ext 489")
                   for line in phone.logs()), phone.logs()
        assert f"127.0.0.1:{phone.port}" not in repr(view)
        # The mesh: every focus subscribes to every other one.
        uris = {node.uri for node in nodes}
        full = wait_for(lambda: all(
            set(f["links"]) == uris - {f["uri"]}
            for node in nodes for f in (node.conference(CONF) or {"foci": [{}]})["foci"]
        ), timeout=10)
        assert full, [node.conference(CONF)["foci"] for node in nodes]
        assert all(len(node.conference(CONF)["foci"]) == 3 for node in nodes)
    finally:
        stop_all(nodes, uac, uas, phone)


def test_refer_to_a_full_focus_is_forwarded(tmp_path):
    nodes = start_foci(tmp_path, [("primary", "primary", 1), ("s1", "secondary", 3)])
    primary, s1 = nodes
    newcomer = Sipp("member_handover.xml", None, tmp_path, ["-set", "hold_ms", "20000"],
                    timeout=60, name="newcomer")
    referrer = Sipp("referrer.xml", f"127.0.0.1:{primary.port}", tmp_path,
                    ["-s", CONF, "-m", "1", "-key", "refer_to",
                     f"sip:newcomer@127.0.0.1:{newcomer.port}"], timeout=60)
    try:
        view, _ = wait_agreement(nodes, CONF, lambda v: len(v[0]) == 2, timeout=20)
        assert view is not None, [node.conference(CONF) for node in nodes]
        holders = {m[0].split("@")[0]: m[2] for m in view[0]}
        assert holders["sip:newcomer"] == s1.uri          # dialled by the focus with room
        invite = next(m for m in newcomer.messages(received=True) if m.startswith("INVITE "))
        assert sip_header(invite, "From").startswith(f"<sip:{CONF}@127.0.0.1:{primary.port}>")
        assert sip_header(invite, "Contact") == f"<sip:{CONF}@127.0.0.1:{primary.port}>;isfocus"
        assert sip_header(invite, "Record-Route") == f"<sip:127.0.0.1:{s1.port};lr;transport=udp>"
        assert sip_header(invite, "Referred-By")
        # The referrer heard the progress of the forwarded REFER.
        frags = wait_for(lambda: [line for line in referrer.logs()
                                  if line.startswith("sipfrag 200")], timeout=10)
        assert frags and "terminated" in frags[0], referrer.logs()
    finally:
        stop_all(nodes, referrer, newcomer)


def test_forwarded_refer_needs_a_trusted_focus_and_a_hop_budget(tmp_path):
    trusted_port = free_port()      # a SIPp the foci list as a peer focus
    nodes = start_foci(tmp_path, [("primary", "primary", 1), ("s1", "secondary", 3)],
                       start=False)
    primary = nodes[0]
    primary.peers.append(f"sip:127.0.0.1:{trusted_port}")
    start_all(nodes)
    target = f"127.0.0.1:{primary.port}"
    uas = Sipp("member_handover.xml", None, tmp_path, ["-set", "hold_ms", "30000"], timeout=60)
    member = Sipp("member_dialin.xml", target, tmp_path,
                  ["-s", CONF, "-m", "1", "-set", "hold_ms", "30000",
                   "-set", "contact_port", str(uas.port)], timeout=60)

    def refer(name, hops, expect, port=None):
        sipp = Sipp("forwarded_refer.xml", target, tmp_path,
                    ["-s", CONF, "-m", "1", "-key", "refer_to", "sip:x@127.0.0.1:9",
                     "-key", "origin", "sip:127.0.0.1:9", "-key", "hops", str(hops),
                     "-set", "expect", expect], timeout=20, name=name, port=port)
        assert sipp.wait() == 0, sipp.logs()
        return next(m for m in sipp.messages(received=True) if m.startswith("SIP/2.0 4"))
    try:
        # The primary is full: its one place is taken, and s1 has joined.
        full, _ = wait_agreement(nodes, CONF, lambda v: len(v[0]) == 1 and len(v[1]) == 2,
                                 timeout=20)
        assert full is not None
        # From a node that is no trusted focus: 403, whatever it says.
        reply = refer("untrusted", 1, "403")
        assert "Untrusted" in reply.split("\n")[0]
        # From a trusted focus, but the hop budget (max_hops = 3) is spent:
        # a full focus does not forward it again, the loop ends with 482.
        reply = refer("loop", 3, "482", port=trusted_port)
        assert reply.startswith("SIP/2.0 482")
        # Neither REFER brought anyone in.
        assert len(primary.conference(CONF)["members"]) == 1
    finally:
        stop_all(nodes, member, uas)


def test_baresip_members_are_handed_over_with_replaces(tmp_path):
    from .peers import dial_all, tone_phone
    from .peers.process import need

    need("baresip")
    nodes = start_foci(tmp_path, [("primary", "primary", 1), ("s1", "secondary", 3)])
    primary, s1 = nodes
    # Four RTP ports: the handover call exists next to the first one.
    phones = [tone_phone(tmp_path, name, rtp_span=4) for name in ("alice", "bob", "carol")]
    try:
        dial_all(phones, f"sip:{CONF}@127.0.0.1:{primary.port}")
        # Alice fills the primary; bob and carol are moved to s1 by a new
        # INVITE from s1.  baresip 1.0 has no Replaces (420 to Require:
        # replaces), so s1 invites again without it, baresip auto-answers,
        # and the primary ends the first call: one call, with s1, remains.
        view, _ = wait_agreement(
            nodes, CONF, lambda v: len(v[0]) == 3 and
            collections.Counter(m[2] for m in v[0]) == {primary.uri: 1, s1.uri: 2},
            timeout=20)
        assert view is not None, [node.conference(CONF) for node in nodes]
        for phone in phones[1:]:
            # One call, now with s1 (the Replaces INVITE came from there), still up.
            calls = wait_for(lambda: len(phone.calls()) == 1 and phone.calls(), timeout=10)
            assert calls, phone.calls()
        time.sleep(3)           # the call stays up (no CALL_CLOSED of the new call)
        for phone in phones:
            assert len(phone.calls()) == 1, (phone.name, phone.calls())
        still = shared_view(primary.conference(CONF))
        assert still == view
    finally:
        for phone in phones:
            phone.stop()
        stop_all(nodes)
