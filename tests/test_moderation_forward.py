"""The operator's kick of another focus's member, forwarded to its holder,
what SIP has no request for (mute, mute-all, lock, end) asked of the other
foci by MESSAGE (relay.py), and the operator's dial (issue 20).

A kick the API of a focus that does not hold the member is a REFER from
that focus to the holder, as the foci ask each other (proof, forwarded
marker), with ``Refer-To: <member;method=BYE>`` (RFC 4579 §5.5); a dial
goes the way a member's REFER dial-out goes (refer.py: ``refer_targets``,
forwarding when full).  First the rules on the Clock-driven rig, then two
real foci with SIPp members, and ``mfocusctl dial`` as a process.
"""

import json

import pytest

from twisted_mfocus.conference.replica import (
    FOCUS,
    SET,
    Delta,
    FocusRecord,
    MemberRecord,
)
from twisted_mfocus.sip.message import make_response, parse_datagram

from .focusrig import ROOM, SDP, Phone, join, make_rig

OTHER = "sip:127.0.0.1:5070"


def _held_elsewhere(room, user="sip:bob@example.com", capacity=5, load=1):
    """Focus OTHER holds ``user`` in ``room`` (its partition, as replicated)."""
    room.mesh.replica.receive(Delta(OTHER, 1, (
        (FOCUS, FocusRecord(OTHER, capacity=capacity, load=load)),
        (SET, MemberRecord(f"{user};x=1", user, epoch=0)))))
    return user


# -- the rules, on the rig ------------------------------------------------------------

def test_a_kick_of_another_focus_member_is_a_refer_bye_to_its_holder():
    rig = make_rig()
    join(rig, Phone(5071))
    room = rig.focus.rooms.get("room")
    bob = _held_elsewhere(room)
    assert rig.focus.views.moderation.kick("room", bob) == (
        202, {"uri": bob, "forwarded_to": OTHER})
    (refer,) = rig.wire.take("REFER")
    assert str(refer.uri) == "sip:room@127.0.0.1:5070"
    assert refer.headers.get("refer-to") == "<sip:bob@example.com;method=BYE>"
    assert refer.headers.get("x-mfocus-forwarded").startswith("<sip:127.0.0.1:5060>;hops=1")
    assert refer.to.tag is None                     # outside any call
    assert rig.wire.take("BYE") == []               # nobody here was ended
    # Mute has no SIP request of its own: a MESSAGE asks the holder (relay.py).
    assert rig.focus.views.moderation.set_muted("room", bob, True) == (
        202, {"uri": bob, "muted": True, "forwarded_to": OTHER})
    (message,) = rig.wire.take("MESSAGE")
    assert str(message.uri) == "sip:room@127.0.0.1:5070" and message.to.tag is None
    assert message.content_type == "application/vnd.mfocus.moderation+json"
    assert json.loads(message.body) == {"action": "mute", "member": bob, "except": None}


def test_a_trusted_focus_refer_bye_outside_a_call_ends_the_member():
    """What the holder does with that REFER: BYE the member (refer.py),
    taken from a focus of the conference although no member's call carries
    it; the same REFER from a stranger is 403 and ends nobody."""
    rig = make_rig()
    ok = join(rig, Phone(5072))
    _held_elsewhere(rig.focus.rooms.get("room"))
    victim = "sip:phone5072@127.0.0.1:5072"
    headers = [("Refer-To", f"<{victim};method=BYE>"),
               ("X-Mfocus-Forwarded", "<sip:127.0.0.1:5070>;hops=1")]
    stranger = Phone(5099, user="stranger")
    rig.deliver(stranger.request("REFER", ROOM, headers=headers), stranger.peer)
    assert rig.wire.take(403)[0].reason == "Forwarded REFER From Untrusted Node"
    assert rig.wire.take("BYE") == []
    focus = Phone(5070, user="room")                # the other focus, by its address
    rig.deliver(focus.request("REFER", ROOM, headers=headers), focus.peer)
    assert rig.wire.take(202)
    (bye,) = rig.wire.take("BYE")
    assert bye.to.tag == ok.from_.tag or bye.call_id == ok.call_id
    notifies = rig.wire.take("NOTIFY")
    assert notifies and notifies[0].body.startswith(b"SIP/2.0 100")


def test_dial_follows_refer_targets_and_reports_the_outcome():
    rig = make_rig()
    join(rig, Phone(5073))
    moderation = rig.focus.views.moderation
    assert moderation.dial("room", "sip:carol@198.51.100.7") == (
        403, {"error": "refused by [focus] refer_targets",
              "reason": "Refer Target Outside Our Domain"})
    assert moderation.dial("room", "not a uri")[0] == 400
    assert moderation.dial("room", "sip:x@127.0.0.1:5999;method=BYE")[0] == 400
    assert moderation.dial("nosuch", "sip:x@127.0.0.1:5999")[0] == 404
    assert moderation.dial("room", "sip:phone5073@127.0.0.1:5073")[0] == 409
    assert rig.wire.take("INVITE") == []            # nobody dialled
    target = "sip:carol@127.0.0.1:5999"
    assert moderation.dial("room", target) == (202, {"uri": target, "status": "dialling"})
    (invite,) = rig.wire.take("INVITE")
    assert str(invite.uri) == target
    assert invite.headers.get("referred-by") == f"<{ROOM}>"
    assert moderation.dials("room") == [{"uri": target, "status": "dialling", "sip": None}]
    assert moderation.dial("room", target) == (409, {"error": "already being dialled"})
    ok = make_response(invite, 200, to_tag="x1", body=SDP,
                       headers=[("Contact", f"<{target}>"), ("Content-Type", "application/sdp")])
    rig.deliver(parse_datagram(ok.to_bytes()), Phone(5999).peer)
    assert target in rig.focus.views.moderation.rooms.get("room").conference.users
    assert moderation.dials("room") == [{"uri": target, "status": "connected",
                                         "sip": "200 OK"}]
    assert moderation.dials("nosuch") is None


def test_a_full_focus_forwards_the_dial_or_answers_503():
    rig = make_rig(capacity=1)
    join(rig, Phone(5074))
    moderation = rig.focus.views.moderation
    target = "sip:carol@127.0.0.1:5999"
    assert moderation.dial("room", target)[0] == 503        # no focus has room
    room = rig.focus.rooms.get("room")
    _held_elsewhere(room, capacity=5, load=1)
    # We hear from OTHER (its subscription is up: mesh.py's reachable).
    room.mesh.links[OTHER] = type("Link", (), {"up": True})()
    assert moderation.dial("room", target) == (
        202, {"uri": target, "status": "dialling", "forwarded": True})
    (refer,) = rig.wire.take("REFER")
    assert refer.headers.get("refer-to") == f"<{target}>"
    assert rig.wire.take("INVITE") == []


def test_the_api_takes_only_a_uri_body():
    from twisted_mfocus.web.api import _dial_uri

    class Body:
        def __init__(self, data):
            import io
            self.content = io.BytesIO(data)
    assert _dial_uri(Body(b'{"uri": "sip:a@b"}')) == "sip:a@b"
    for bad in (b"", b"{", b"[]", b'{"uri": 5}', b'{"uri": "sip:a@b", "x": 1}'):
        assert _dial_uri(Body(bad))[0] == 400, bad
    assert _dial_uri(Body(json.dumps({"uri": "x" * 5000}).encode()))[0] == 413


# -- two real foci, SIPp members ---------------------------------------------------------

CONF = "conf1"


def _post(node, path, body=None):
    from .test_moderation import post
    return post(node.http, f"/api/v1/conferences/{CONF}/{path}", body)


def _quoted(uri):
    return uri.replace(":", "%3A").replace("@", "%40")


def _two_foci_two_members(tmp_path, proof="address"):
    """A primary of capacity 1 and a secondary; two members (member_dialin.xml,
    whose Contact is a member_handover.xml UAS): one on each focus."""
    from .foci import proof_config, start_foci, wait_agreement
    from .harness import Sipp
    nodes = start_foci(tmp_path, [("primary", "primary", 1), ("s1", "secondary", 3)],
                       "[media]\nrtp_timeout = 0\n" + proof_config(tmp_path, proof))
    uas = Sipp("member_handover.xml", None, tmp_path, ["-set", "hold_ms", "60000"],
               timeout=90)
    uac = Sipp("member_dialin.xml", f"127.0.0.1:{nodes[0].port}", tmp_path,
               ["-s", CONF, "-m", "2", "-l", "2", "-r", "2", "-set", "hold_ms", "60000",
                "-set", "contact_port", str(uas.port)], timeout=90)
    view, _ = wait_agreement(nodes, CONF, lambda v: len(v[0]) == 2 and len(v[1]) == 2 and
                             len({m[2] for m in v[0]}) == 2, timeout=30)
    assert view is not None, [node.conference(CONF) for node in nodes]
    return nodes, uas, uac, {m[2]: m[0] for m in view[0]}


def _call_ids(sipp, method, where=""):
    """The Call-IDs of the ``method`` requests ``sipp`` received (containing ``where``)."""
    from .harness import sip_header
    return [sip_header(m, "Call-ID") for m in sipp.messages(received=True)
            if m.startswith(method + " ") and where in m]


@pytest.mark.parametrize("proof", ["address", "secret"])
def test_a_kick_at_the_focus_not_holding_the_member_byes_it_at_its_holder(tmp_path, proof):
    from .foci import stop_all, wait_agreement
    from .harness import wait_for
    nodes, uas, uac, member_at = _two_foci_two_members(tmp_path, proof)
    primary, s1 = nodes
    try:
        at_s1, at_primary = member_at[s1.uri], member_at[primary.uri]
        # The secondary's call with its member: its INVITE Record-Routes s1.
        (call,) = _call_ids(uas, "INVITE", f"<sip:127.0.0.1:{s1.port};lr")
        assert _post(primary, f"members/{_quoted(at_s1)}/kick") == (
            202, {"uri": at_s1, "forwarded_to": s1.uri})
        assert wait_for(lambda: call in _call_ids(uas, "BYE"), timeout=10), uas.logs()
        left, _ = wait_agreement(nodes, CONF, lambda v: [m[0] for m in v[0]] == [at_primary],
                                 timeout=15)
        assert left is not None, [node.conference(CONF) for node in nodes]
        # And the other way: s1's API, the primary's member.
        assert _post(s1, f"members/{_quoted(at_primary)}/kick") == (
            202, {"uri": at_primary, "forwarded_to": primary.uri})
        gone, _ = wait_agreement(nodes, CONF, lambda v: v[0] == [], timeout=15)
        assert gone is not None, [node.conference(CONF) for node in nodes]
        assert all(node.process.proc.poll() is None for node in nodes)
    finally:
        stop_all(nodes, uac, uas)


def test_dial_by_the_api_and_by_mfocusctl(tmp_path):
    from .foci import start_foci, stop_all, wait_agreement
    from .harness import Sipp, api_get, free_port, wait_for
    from .test_ctl import ctl
    nodes = start_foci(tmp_path, [("primary", "primary", 1), ("s1", "secondary", 3)],
                       "[media]\nrtp_timeout = 0\n")
    primary, s1 = nodes
    callee = Sipp("member_handover.xml", None, tmp_path, ["-set", "hold_ms", "60000"],
                  timeout=90, name="callee")
    uas = Sipp("member_handover.xml", None, tmp_path, ["-set", "hold_ms", "60000"],
               timeout=90)
    uac = Sipp("member_dialin.xml", f"127.0.0.1:{primary.port}", tmp_path,
               ["-s", CONF, "-m", "1", "-set", "hold_ms", "60000",
                "-set", "contact_port", str(uas.port)], timeout=90)

    def users(view):
        return sorted(m[0].split("@")[0] for m in view[0])
    try:
        joined, _ = wait_agreement(nodes, CONF, lambda v: len(v[0]) == 1 and len(v[1]) == 2,
                                   timeout=20)
        assert joined is not None, [node.conference(CONF) for node in nodes]
        # The primary is full: the dial goes to the focus with room, as a REFER would.
        bob = f"sip:bob@127.0.0.1:{callee.port}"
        assert _post(primary, "dial", {"uri": bob}) == (
            202, {"uri": bob, "status": "dialling", "forwarded": True})
        view, _ = wait_agreement(nodes, CONF, lambda v: len(v[0]) == 2, timeout=20)
        assert view is not None, [node.conference(CONF) for node in nodes]
        assert {m[0]: m[2] for m in view[0]}[bob] == s1.uri
        assert any(line.startswith("invite bob from ") for line in callee.logs())
        assert wait_for(lambda: api_get(primary.http, f"/api/v1/conferences/{CONF}/dials")[1]
                        == [{"uri": bob, "status": "connected", "sip": "200 OK"}], timeout=10)
        # Outside [focus] refer_targets (our domain): 403 with the reason, nobody dialled.
        status, body = _post(s1, "dial", {"uri": "sip:carol@198.51.100.7"})
        assert (status, body) == (403, {"error": "refused by [focus] refer_targets",
                                        "reason": "Refer Target Outside Our Domain"})
        assert _post(s1, "dial", {"uri": "carol"})[0] == 400
        assert _post(s1, "dial", {"uri": bob})[0] == 409            # a member already
        assert _post(s1, "dial", {"who": bob})[0] == 400
        assert s1.api(f"/api/v1/conferences/{CONF}/dials") == []     # only the API's own

        # mfocusctl dial, as a process: text and --json, exit codes.
        api = f"http://127.0.0.1:{s1.http}"
        carol, dave = (f"sip:{u}@127.0.0.1:{callee.port}" for u in ("carol", "dave"))
        assert ctl("dial", CONF, carol, api=api) == (0, f"dialling {carol} into {CONF}\n", "")
        code, out, _ = ctl("--json", "dial", CONF, dave, api=api)
        assert (code, json.loads(out)) == (0, {"uri": dave, "status": "dialling"})
        view, _ = wait_agreement(nodes, CONF, lambda v: len(v[0]) == 4, timeout=20)
        assert view is not None, [node.conference(CONF) for node in nodes]
        assert users(view) == ["sip:bob", "sip:carol", "sip:dave", "sip:member1"]
        code, out, err = ctl("dial", CONF, "sip:eve@198.51.100.7", api=api)
        assert (code, out) == (1, "") and "Refer Target Outside Our Domain" in err, err
        code, out, _ = ctl("--json", "dial", CONF, "sip:eve@198.51.100.7", api=api)
        assert code == 1 and json.loads(out)["reason"] == "Refer Target Outside Our Domain"
        code, _, err = ctl("dial", "nosuch", carol, api=api)
        assert code == 1 and "no such conference" in err
        assert ctl("dial", CONF, api=api)[0] == 2                   # usage
        code, _, err = ctl("dial", CONF, carol, api=f"http://127.0.0.1:{free_port()}")
        assert code == 3 and "cannot reach" in err
        assert len(_call_ids(callee, "INVITE")) == 3                # bob, carol, dave only
        assert wait_agreement(nodes, CONF, lambda v: len(v[0]) == 4, timeout=5)[0]
    finally:
        stop_all(nodes, uac, uas, callee)


def test_the_api_routes_dial_and_dials():
    import io

    from twisted.web.test.requesthelper import DummyRequest

    from twisted_mfocus.web.api import api_root

    from .apiviews import Views
    views = Views()
    root = api_root(views)              # names None: no Host/Origin/type checks

    def call(method, path, body=b""):
        request = DummyRequest(path.encode().split(b"/")[1:])
        request.method = method.encode()
        request.content = io.BytesIO(body)
        out = root.render(request)
        return request.responseCode or 200, json.loads(b"".join(request.written) or out)
    assert call("POST", "/api/v1/conferences/room/dial", b'{"uri": "sip:c@h"}') == (
        202, {"uri": "sip:c@h", "status": "dialling"})
    assert call("POST", "/api/v1/conferences/room/dial", b'{"url": "sip:c@h"}')[0] == 400
    assert call("GET", "/api/v1/conferences/room/dials") == (200, [])
    assert call("GET", "/api/v1/conferences/nosuch/dials")[0] == 404
    assert views.calls == [("dial", "room", "sip:c@h"), ("dials", "room"), ("dials", "nosuch")]


@pytest.mark.parametrize("proof", ["address", "secret"])
def test_mute_lock_and_end_reach_the_other_foci(tmp_path, proof):
    """What SIP has no request for is asked of the other foci by MESSAGE
    (relay.py): the API of the primary mutes s1's member, locks the room
    at s1 too, and ends the conference everywhere; a process that is no
    focus asking the same gets 403 and changes nothing."""
    from . import sipclient
    from .foci import stop_all
    from .harness import api_get, wait_for
    nodes, uas, uac, member_at = _two_foci_two_members(tmp_path, proof)
    primary, s1 = nodes
    stranger = sipclient.UDP()
    try:
        at_s1 = member_at[s1.uri]

        def muted_at_s1():
            view = api_get(s1.http, f"/api/v1/conferences/{CONF}")[1]
            return {m["uri"]: m["muted"] for m in view["members"]}.get(at_s1)
        # A stranger's MESSAGE: 403, nothing muted.
        body = json.dumps({"action": "mute", "member": at_s1}).encode()
        ask = sipclient.request(
            "MESSAGE", f"sip:{CONF}@127.0.0.1:{s1.port}", stranger.port,
            from_uri=f"sip:127.0.0.1:{stranger.port}", to_uri=f"sip:{CONF}@127.0.0.1",
            headers=[("Content-Type", "application/vnd.mfocus.moderation+json")])
        ask = ask.replace(b"Content-Length: 0\r\n\r\n",
                          b"Content-Length: %d\r\n\r\n" % len(body)) + body
        assert stranger.ask(ask, s1.port)[0] == 403
        assert muted_at_s1() is False
        # The primary's API: s1's member muted at s1, then unmuted.
        assert _post(primary, f"members/{_quoted(at_s1)}/mute") == (
            202, {"uri": at_s1, "muted": True, "forwarded_to": s1.uri})
        assert wait_for(lambda: muted_at_s1() is True, timeout=10)
        assert _post(primary, f"members/{_quoted(at_s1)}/unmute")[0] == 202
        assert wait_for(lambda: muted_at_s1() is False, timeout=10)
        status, body = _post(primary, "mute-all")
        assert status == 200 and body["forwarded_to"] == [s1.uri]
        assert wait_for(lambda: muted_at_s1() is True, timeout=10)
        # Locked at the primary locks the room at s1 too.
        assert _post(primary, "lock") == (
            200, {"name": CONF, "locked": True, "forwarded_to": [s1.uri]})
        assert wait_for(lambda: api_get(s1.http, f"/api/v1/conferences/{CONF}")[1].get(
            "locked") is True, timeout=10)
        # Ended at the primary: every member gets its BYE, both foci empty.
        status, body = _post(primary, "end")
        assert status == 200 and body["forwarded_to"] == [s1.uri], body
        assert wait_for(lambda: len(_call_ids(uas, "BYE")) + len(_call_ids(uac, "BYE")) >= 2,
                        timeout=10), (uas.logs(), uac.logs())
        assert wait_for(lambda: all(api_get(n.http, f"/api/v1/conferences/{CONF}")[0] == 404
                                    or not api_get(n.http, f"/api/v1/conferences/{CONF}")[1][
                                        "members"] for n in nodes), timeout=15)
        assert all(node.process.proc.poll() is None for node in nodes)
    finally:
        stranger.close()
        stop_all(nodes, uac, uas)


def test_a_focus_asking_by_message_gets_what_it_asks_or_why_not():
    """relay.py on the rig: OTHER (a focus of the room, trusted by its
    loopback address here) asks; a phone that is no focus gets 403."""
    rig = make_rig()
    ok = join(rig, Phone(5071))
    member = "sip:phone5071@127.0.0.1:5071"
    _held_elsewhere(rig.focus.rooms.get("room"))
    focus, phone = Phone(5070), Phone(5072)

    def ask(sender, body, ruri=ROOM, kind="application/vnd.mfocus.moderation+json"):
        raw = sender.request("MESSAGE", ruri).to_bytes().replace(
            b"Content-Length: 0\r\n\r\n",
            b"Content-Type: %s\r\nContent-Length: %d\r\n\r\n" % (kind.encode(), len(body)))
        rig.deliver(parse_datagram(raw + body), sender.peer)
        (answer,) = [r for r in rig.wire.take() if getattr(r, "status", None) and
                     r.cseq.method == "MESSAGE"]
        return answer.status, answer.reason

    mute = json.dumps({"action": "mute", "member": member}).encode()
    assert ask(phone, mute)[0] == 403
    leg = rig.focus.rooms.get("room").legs[0]
    assert not leg.muted
    assert ask(focus, mute) == (200, "OK") and leg.muted
    assert ask(focus, b"{not json")[0] == 400
    assert ask(focus, json.dumps({"action": "explode"}).encode())[0] == 400
    assert ask(focus, b" " * 5000)[0] == 413
    assert ask(focus, mute, kind="text/plain")[0] == 415
    assert ask(focus, mute, ruri="sip:nosuch@127.0.0.1:5060")[0] == 404
    # Asked of us, we do our part and ask nobody further: OTHER's member is 409.
    status, reason = ask(focus, json.dumps({"action": "mute",
                                             "member": "sip:bob@example.com"}).encode())
    assert (status, reason) == (409, "held by another focus")
    assert rig.wire.take("MESSAGE") == []
    assert ok.status == 200
