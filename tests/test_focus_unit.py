"""The focus driven on a ``task.Clock`` with an in-memory wire (tests/focusrig.py)."""

import pytest

from .focusrig import SDP, Phone, answer, join, make_rig, ROOM


@pytest.fixture
def rig():
    return make_rig(config_text="[room:room]\n")     # watchers may SUBSCRIBE before a join


def conference(rig):
    return rig.focus.rooms.get("room").conference


def test_dial_in_answers_with_isfocus_and_joins_on_ack(rig):
    phone = Phone(5001)
    ok = join(rig, phone, ack=False)
    assert str(ok.contacts[0]) == "<sip:room@127.0.0.1:5060>;isfocus"
    assert {"Allow", "Allow-Events", "Supported"} <= {n for _, n, _ in ok.headers._items}
    assert conference(rig).user_count == 0          # not before the ACK
    rig.deliver(phone.request("ACK", ROOM, to_tag=ok.to.tag), phone.peer)
    assert list(conference(rig).users) == ["sip:phone5001@127.0.0.1:5001"]


def test_2xx_is_retransmitted_until_acked_then_bye(rig):
    phone = Phone(5002)
    join(rig, phone, ack=False)
    times = []
    for _ in range(70):
        rig.clock.advance(0.5)
        if rig.wire.take(200):
            times.append(rig.clock.seconds())
    # §13.3.1.4: T1, 2T1, 4T1 ... capped at T2, for 64*T1.
    assert times[:5] == [0.5, 1.5, 3.5, 7.5, 11.5]
    assert max(times) < 32
    assert len({bye.top_via.branch for bye in rig.wire.take("BYE")}) == 1
    assert rig.focus.node.load == 0


@pytest.mark.parametrize("transport", ["UDP", "TCP"])
def test_a_2xx_retransmitter_keeps_one_timer_and_gives_up_at_64_t1(transport):
    """§13.3.1.4: T1 doubling to T2 over UDP, nothing over TCP; the give-up at
    64*T1 either way, from the one timer it holds; ACKed, nothing is left."""
    from twisted.internet.task import Clock

    from twisted_mfocus.focus.ua import Retransmitter
    from twisted_mfocus.sip.address import Peer
    from twisted_mfocus.sip.transaction import Timers

    class UA:
        clock, timers = Clock(), Timers(T1=0.5, T2=4.0, T4=5.0)

    class Txn:
        source = Peer(transport, "127.0.0.1", 5070)
        sent = []

        def respond(self, response):
            self.sent.append(UA.clock.seconds())

    expired = []
    Retransmitter(UA, Txn(), "200", lambda: expired.append(UA.clock.seconds()))
    for _ in range(80):
        assert len(UA.clock.getDelayedCalls()) <= 1
        UA.clock.advance(0.5)
    resends = [0.5, 1.5, 3.5, 7.5, 11.5, 15.5, 19.5, 23.5, 27.5, 31.5]
    assert Txn.sent == (resends if transport == "UDP" else []) and expired == [32.0]
    acked = Retransmitter(UA, Txn(), "200", lambda: expired.append(None))
    acked.stop()
    UA.clock.advance(64)
    assert not UA.clock.getDelayedCalls() and expired == [32.0]


def test_burst_of_joins_is_one_partial_notify_per_subscriber(rig):
    watcher = Phone(5100, "watcher")
    rig.deliver(watcher.request("SUBSCRIBE", ROOM, headers=[("Event", "conference"),
                                                            ("Expires", "60")]),
                watcher.peer)
    assert rig.wire.take(200)
    assert len(answer(rig, rig.wire.take("NOTIFY"), watcher.peer)) == 1   # full state
    rig.clock.advance(1)
    for port in range(5101, 5104):
        join(rig, Phone(port))
        rig.clock.advance(0.01)
    rig.clock.advance(0.5)
    notifies = answer(rig, rig.wire.take("NOTIFY"), watcher.peer)
    assert len(notifies) == 1
    assert notifies[0].body.count(b"<user entity=") == 3
    assert b'state="partial"' in notifies[0].body


def test_replaces_swaps_the_call_and_byes_the_old_one(rig):
    phone = Phone(5003)
    ok = join(rig, phone)
    replaces = f"{phone.call_id};to-tag={ok.to.tag};from-tag={phone.tag}"
    new = Phone(5003)
    rig.deliver(new.request("INVITE", ROOM, body=SDP, headers=[("Replaces", replaces)]),
                new.peer)
    ok2 = rig.wire.take(200)[-1]
    rig.deliver(new.request("ACK", ROOM, to_tag=ok2.to.tag), new.peer)
    bye = rig.wire.take("BYE")
    assert [b.call_id for b in bye] == [phone.call_id]
    users = conference(rig).users
    assert len(users) == 1 and len(next(iter(users.values())).endpoints) == 1


def test_replaces_of_an_unknown_call_is_481(rig):
    phone = Phone(5004)
    rig.deliver(phone.request("INVITE", ROOM, body=SDP,
                              headers=[("Replaces", "nope;to-tag=a;from-tag=b")]), phone.peer)
    assert rig.wire.take(481)


def test_bad_input_gets_clear_errors(rig):
    phone = Phone(5005)
    rig.deliver(phone.request("BYE", ROOM, to_tag="nosuch"), phone.peer)
    assert rig.wire.take(481)
    rig.deliver(phone.request("INVITE", ROOM, body=b"v=0\r\nbogus\r\n"), phone.peer)
    bad = rig.wire.take(400)
    assert bad and bad[0].reason.startswith("SDP")
    video = SDP.replace(b"m=audio 4000 RTP/AVP 0\r\na=rtpmap:0 PCMU/8000",
                        b"m=audio 4000 RTP/AVP 18\r\na=rtpmap:18 G729/8000")
    rig.deliver(Phone(5006).request("INVITE", ROOM, body=video), Phone(5006).peer)
    assert rig.wire.take(488)
    rig.deliver(phone.request("SUBSCRIBE", ROOM, headers=[("Event", "presence")]), phone.peer)
    refused = rig.wire.take(489)
    assert refused and "conference" in refused[0].headers.get("allow-events")
    assert rig.focus.node.load == 0 and rig.focus.ua.dialogs == {}


def test_full_focus_answers_486(rig):
    for port in range(5010, 5014):
        join(rig, Phone(port))
    rig.deliver(Phone(5014).request("INVITE", ROOM, body=SDP), Phone(5014).peer)
    assert rig.wire.take(486)


def test_refer_policy(rig):
    """A REFER is authorised by the call it arrives in (or a digest), never
    by its From; it may make us dial only addresses of our own domain."""
    member = Phone(5020)
    ok = join(rig, member)
    outsider = Phone(5021)
    rig.deliver(outsider.request("REFER", ROOM, headers=[
        ("Refer-To", "<sip:x@127.0.0.1:5999>")]), outsider.peer)
    assert rig.wire.take(403)[0].reason == "Only Members May Refer"
    # The same answer for a room that does not exist: no oracle.
    rig.deliver(outsider.request("REFER", "sip:nosuch@127.0.0.1:5060", headers=[
        ("Refer-To", "<sip:x@127.0.0.1:5999>")]), outsider.peer)
    assert rig.wire.take(403)[0].reason == "Only Members May Refer"
    # A member's From, out of any call: no proof of anything.
    forger = Phone(5022, user="phone5020")
    rig.deliver(forger.request("REFER", ROOM, headers=[
        ("Refer-To", "<sip:x@127.0.0.1:5999>")]), forger.peer)
    assert rig.wire.take(403)[0].reason == "Only Members May Refer"
    assert not rig.wire.take("INVITE")

    def refer(target):
        rig.deliver(member.request("REFER", ROOM, to_tag=ok.to.tag,
                                   headers=[("Refer-To", target)]), member.peer)
    refer("<mailto:x@example.com>")
    assert rig.wire.take(403)[0].reason == "Only SIP URIs May Be Referred"
    refer("<sip:x@198.51.100.7:5060>")          # outside our domain: nothing dialled
    assert rig.wire.take(403)[0].reason == "Refer Target Outside Our Domain"
    assert not rig.wire.take("INVITE")
    refer("<sip:x@127.0.0.1:5999>")
    assert rig.wire.take(202)
    progress = rig.wire.take("NOTIFY")          # 100 Trying, with our Contact
    assert progress and [str(n.contacts[0]) for n in progress] == \
        ["<sip:room@127.0.0.1:5060>;isfocus"] * len(progress)
    invite = rig.wire.take("INVITE")[0]
    assert str(invite.uri) == "sip:x@127.0.0.1:5999"
    assert invite.headers.get("referred-by") == "<sip:phone5020@127.0.0.1:5020>"
    assert str(invite.from_.uri) == conference(rig).uri
    assert str(invite.contacts[0]) == "<sip:room@127.0.0.1:5060>;isfocus"


def test_shutdown_byes_every_call_and_ends_every_subscription(rig):
    join(rig, Phone(5030))
    join(rig, Phone(5031))
    watcher = Phone(5032)
    rig.deliver(watcher.request("SUBSCRIBE", ROOM, headers=[("Event", "conference")]),
                watcher.peer)
    rig.wire.take()
    done = rig.focus.shutdown()
    assert len(rig.wire.take("BYE")) == 2
    final = rig.wire.take("NOTIFY")
    assert [n.headers.get("subscription-state") for n in final] == [
        "terminated;reason=noresource"]
    assert not done.called          # it waits for the answers (bounded by the service)


def test_a_conference_nobody_holds_or_watches_is_forgotten(rig):
    phone, watcher = Phone(5041), Phone(5040)
    uri = "sip:watched@127.0.0.1:5060"
    rig.deliver(phone.request("INVITE", uri, body=SDP), phone.peer)
    ok = rig.wire.take(200)[-1]
    rig.deliver(phone.request("ACK", uri, to_tag=ok.to.tag), phone.peer)
    rig.deliver(watcher.request("SUBSCRIBE", uri,
                                headers=[("Event", "conference"), ("Expires", "2")]),
                watcher.peer)
    answer(rig, rig.wire.take("NOTIFY"), watcher.peer)
    rig.deliver(phone.request("BYE", uri, to_tag=ok.to.tag), phone.peer)
    assert rig.wire.take(200)
    assert "watched" in rig.focus.rooms          # nobody in it, but watched
    rig.clock.advance(2.5)                       # expiry: final NOTIFY
    answer(rig, rig.wire.take("NOTIFY"), watcher.peer)
    assert "watched" not in rig.focus.rooms


def test_hold_reinvite_is_answered_recvonly_and_shown_on_hold(rig):
    watcher = Phone(5050, "watcher")
    rig.deliver(watcher.request("SUBSCRIBE", ROOM, headers=[("Event", "conference")]),
                watcher.peer)
    answer(rig, rig.wire.take("NOTIFY"), watcher.peer)
    phone = Phone(5051)
    ok = join(rig, phone)
    rig.clock.advance(0.5)
    answer(rig, rig.wire.take("NOTIFY"), watcher.peer)
    hold = SDP.replace(b"a=rtpmap:0 PCMU/8000\r\n", b"a=rtpmap:0 PCMU/8000\r\na=sendonly\r\n")
    rig.deliver(phone.request("INVITE", ROOM, to_tag=ok.to.tag, body=hold), phone.peer)
    ok2 = rig.wire.take(200)[-1]
    assert b"a=recvonly" in ok2.body
    assert b" 2 IN IP4 " in ok2.body                 # o= version went up (RFC 3264 §8)
    rig.deliver(phone.request("ACK", ROOM, to_tag=ok.to.tag), phone.peer)
    rig.clock.advance(0.5)
    notify = answer(rig, rig.wire.take("NOTIFY"), watcher.peer)[-1]
    assert b"<status>on-hold</status>" in notify.body
    endpoint = next(iter(conference(rig).users.values())).endpoints
    assert [e.status for e in endpoint.values()] == ["on-hold"]


def test_late_offer_is_answered_in_the_ack(rig):
    phone = Phone(5060)
    rig.deliver(phone.request("INVITE", ROOM), phone.peer)
    ok = rig.wire.take(200)[-1]
    assert b"m=audio " in ok.body and b"RTP/AVP 96 9 0 8 102 101" in ok.body   # our offer
    assert conference(rig).user_count == 0
    rig.deliver(phone.request("ACK", ROOM, to_tag=ok.to.tag, body=SDP), phone.peer)
    assert conference(rig).user_count == 1


def test_late_offer_without_answer_ends_the_call(rig):
    phone = Phone(5061)
    rig.deliver(phone.request("INVITE", ROOM), phone.peer)
    ok = rig.wire.take(200)[-1]
    rig.deliver(phone.request("ACK", ROOM, to_tag=ok.to.tag), phone.peer)
    assert rig.wire.take("BYE") and rig.focus.node.load == 0


def test_a_subscribe_makes_no_conference(rig):
    """Only an admitted INVITE or the configuration makes a room: a
    SUBSCRIBE to the factory or to a room nobody made gets 404, so
    subscriptions cannot squat conference slots."""
    watcher = Phone(5070)
    for uri in ("sip:conference@127.0.0.1:5060", "sip:nosuch@127.0.0.1:5060"):
        rig.deliver(watcher.request("SUBSCRIBE", uri, headers=[("Event", "conference")]),
                    watcher.peer)
        assert rig.wire.take(404)
    assert [room.name for room in rig.focus.rooms] == []
    rig.deliver(watcher.request("SUBSCRIBE", ROOM, headers=[("Event", "conference")]),
                watcher.peer)                   # [room:room] is configured
    assert rig.wire.take(200)
    assert [room.name for room in rig.focus.rooms] == ["room"]


def test_large_requests_go_over_tcp_unless_the_uri_names_a_transport():
    """RFC 3261 §18.1.1 in the UA (the transport sends where it is told)."""
    from twisted_mfocus.focus.ua import _congestion_controlled
    from twisted_mfocus.sip.address import Peer
    from twisted_mfocus.sip.headers import Headers
    from twisted_mfocus.sip.message import Request
    udp = Peer("UDP", "127.0.0.1", 5070)

    def notify(uri, size):
        h = Headers()
        h.add("Call-ID", "x")
        return Request("NOTIFY", uri, h, b"x" * size)
    assert _congestion_controlled(notify("sip:a@127.0.0.1:5070", 400), udp) is udp
    assert _congestion_controlled(notify("sip:a@127.0.0.1:5070", 2000), udp) == \
        Peer("TCP", "127.0.0.1", 5070)
    assert _congestion_controlled(notify("sip:a@127.0.0.1:5070;transport=udp", 2000),
                                  udp) is udp


def test_dialog_ids_only_to_members_and_replaces_only_by_the_party(rig):
    """RFC 4575 <call-info> carries a member's dialog ids, enough for a
    Replaces (RFC 3891): a stranger's subscription gets no dialog ids, and a
    Replaces from anyone but the party of the call is refused (§6)."""
    member = Phone(5040)
    ok = join(rig, member)
    stranger = Phone(5041, "stranger")
    rig.deliver(stranger.request("SUBSCRIBE", ROOM, headers=[("Event", "conference")]),
                stranger.peer)
    assert rig.wire.take(200)
    public = answer(rig, rig.wire.take("NOTIFY"), stranger.peer)[0].body
    assert b"<endpoint entity=" in public and b"call-info" not in public
    assert member.call_id.encode() not in public
    # The member's own subscription, from the flow of its call, has them.
    rig.deliver(member.request("SUBSCRIBE", ROOM, headers=[("Event", "conference")],
                               call_id="sub5040"), member.peer)
    assert rig.wire.take(200)
    own = answer(rig, rig.wire.take("NOTIFY"), member.peer)[0].body
    assert b"<call-info>" in own and member.call_id.encode() in own
    # The stranger read the ids anyway (as a member could): its Replaces fails.
    replaces = f"{member.call_id};to-tag={ok.to.tag};from-tag={member.tag}"
    rig.deliver(stranger.request("INVITE", ROOM, body=SDP, call_id="take-over",
                                 headers=[("Replaces", replaces)]), stranger.peer)
    refusal = rig.wire.take(403)
    assert refusal and refusal[0].reason == "Not Allowed To Replace That Call"
    assert not rig.wire.take("BYE")                  # the member keeps its call
    assert list(conference(rig).users) == ["sip:phone5040@127.0.0.1:5040"]


def test_configured_rooms_locked_full_and_subscribers(tmp_path):
    """[focus] create_rooms = configured: an unknown room is 404 and the
    factory URI 403; a locked room admits nobody new (403); a room at its
    max_members is 486; subscribers = members refuses a stranger (403)."""
    rig = make_rig(config_text=(
        "[focus]\ncreate_rooms = configured\n"
        "[room:room]\nmax_members = 1\nsubscribers = members\n"
        "[room:shut]\nlocked = yes\n"))

    def invite(phone, uri):
        rig.deliver(phone.request("INVITE", uri, body=SDP), phone.peer)
        return rig.wire.take()
    assert [m.status for m in invite(Phone(5050), "sip:nosuch@127.0.0.1:5060")] == [404]
    factory = invite(Phone(5051), "sip:conference@127.0.0.1:5060")
    assert [(m.status, m.reason) for m in factory] == [(403, "Conference Creation Not Allowed")]
    shut = invite(Phone(5052), "sip:shut@127.0.0.1:5060")
    assert [(m.status, m.reason) for m in shut] == [(403, "Conference Locked")]
    join(rig, Phone(5053))
    full = [m for m in invite(Phone(5054), ROOM) if m.status >= 200]
    assert [(m.status, m.reason) for m in full] == [(486, "Conference Full")]
    assert [room.name for room in rig.focus.rooms] == ["room"]
    stranger = Phone(5055)
    rig.deliver(stranger.request("SUBSCRIBE", ROOM, headers=[("Event", "conference")]),
                stranger.peer)
    assert [m.status for m in rig.wire.take()] == [403]


def test_a_preloaded_route_to_the_focus_is_loose_routing(rig):
    """A phone whose outbound proxy is the focus sends INVITE sip:room@focus
    with Route: <sip:focus;lr>: the Route is ours (popped, §16.4), the
    Request-URI stays the conference (no strict-router fixup: our
    Record-Route values name no user)."""
    phone = Phone(5080)
    rig.deliver(phone.request("INVITE", ROOM, body=SDP,
                              headers=[("Route", "<sip:127.0.0.1:5060;lr>")]), phone.peer)
    ok = rig.wire.take(200)[-1]
    rig.deliver(phone.request("ACK", ROOM, to_tag=ok.to.tag), phone.peer)
    assert conference(rig).user_count == 1


def test_an_invite_whose_accept_takes_no_sdp_gets_406(rig):
    """RFC 4475 §3.3.15: our 200 would carry SDP, which its Accept refuses."""
    phone = Phone(5081)
    rig.deliver(phone.request("INVITE", ROOM, body=SDP,
                              headers=[("Accept", "text/nobodyKnowsThis")]), phone.peer)
    refused = rig.wire.take(406)
    assert refused and refused[0].headers.get("accept") == "application/sdp"
    assert rig.focus.node.load == 0
    rig.deliver(Phone(5082).request("INVITE", ROOM, body=SDP, headers=[
        ("Accept", "application/sdp, application/dtmf-relay")]), Phone(5082).peer)
    assert rig.wire.take(200)


def test_each_members_codec_is_named_in_its_media_and_in_the_api(rig, schema):
    """RFC 4575 §5.7.4: a member's media element names its codec in
    display-text (as SDP does); the document stays valid."""
    from lxml import etree
    watcher = Phone(5090, "watcher")
    rig.deliver(watcher.request("SUBSCRIBE", ROOM, headers=[("Event", "conference")]),
                watcher.peer)
    answer(rig, rig.wire.take("NOTIFY"), watcher.peer)
    join(rig, Phone(5091))
    rig.clock.advance(0.5)
    (notify,) = answer(rig, rig.wire.take("NOTIFY"), watcher.peer)
    doc = etree.fromstring(notify.body)
    schema.assertValid(doc)
    ns = {"ci": "urn:ietf:params:xml:ns:conference-info"}
    assert doc.xpath("//ci:endpoint/ci:media/ci:display-text/text()", namespaces=ns) == [
        "PCMU/8000"]
    (member,) = rig.focus.views.conference("room")["members"]
    assert member["codec"] == member["rtp"]["codec"] == "PCMU/8000"
