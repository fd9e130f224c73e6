"""Per-source budgets (twisted_mfocus/budget.py) on a ``task.Clock``, and
what the focus does with them (the in-memory rig, tests/focusrig.py)."""

from twisted.internet.task import Clock

from twisted_mfocus.budget import SourceBudgets, Verdict, source_key
from twisted_mfocus.focus.subscriptions import QUEUE_LIMIT

from .focusrig import SDP, Phone, answer, make_rig, ROOM


def test_a_source_over_its_rate_gets_one_503_a_second_then_silence():
    clock = Clock()
    budgets = SourceBudgets(clock.seconds, rate=10, burst=20)
    verdicts = [budgets.request("192.0.2.1") for _ in range(25)]
    assert verdicts[:20] == [Verdict.ADMIT] * 20
    assert verdicts[20] is Verdict.REFUSE and budgets.episode is False  # episode began at 20
    assert verdicts[21:] == [Verdict.DROP] * 4
    assert budgets.request("192.0.2.2") is Verdict.ADMIT      # another source is not hurt
    clock.advance(0.5)                          # five tokens back
    assert [budgets.request("192.0.2.1") for _ in range(6)] == [Verdict.ADMIT] * 5 + [
        Verdict.DROP]                           # within a second of the last 503: silence
    assert budgets.episode                      # but a new episode: logged again
    clock.advance(1.0)
    assert [budgets.request("192.0.2.1") for _ in range(11)] == [Verdict.ADMIT] * 10 + [
        Verdict.REFUSE]                         # a second after the last 503: one more
    assert budgets.retry_after == 1


def test_the_episode_flag_marks_only_its_first_refusal():
    clock = Clock()
    budgets = SourceBudgets(clock.seconds, rate=1, burst=1)
    budgets.request("h")
    budgets.request("h")
    assert budgets.episode
    budgets.request("h")
    assert not budgets.episode


def test_ipv6_sources_count_by_their_64():
    assert source_key("2001:db8:1:2::5") == source_key("2001:db8:1:2:ffff::9") == \
        "2001:db8:1:2::/64"
    assert source_key("2001:db8:1:3::5") != source_key("2001:db8:1:2::5")
    assert source_key("192.0.2.7") == "192.0.2.7"


def test_the_bucket_table_is_bounded_and_a_spray_shares_one_bucket():
    clock = Clock()
    budgets = SourceBudgets(clock.seconds, rate=1, burst=2, max_sources=100)
    for i in range(1000):
        budgets.request(f"10.0.{i // 250}.{i % 250}")
    assert budgets.sources <= 101
    # the sources beyond the table share one bucket, which is empty by now
    assert budgets.request("10.9.9.9") is not Verdict.ADMIT
    clock.advance(10)                           # every bucket refilled: all forgotten
    assert budgets.request("10.9.9.9") is Verdict.ADMIT
    assert budgets.sources == 1


def test_holds_are_counted_per_source_and_given_back_once():
    budgets = SourceBudgets(Clock().seconds, limits={"calls": 2})
    a, b = budgets.hold("calls", "h1"), budgets.hold("calls", "h1")
    assert a and b and budgets.hold("calls", "h1") is None
    assert budgets.hold("calls", "h2") is not None
    a.release()
    a.release()                                 # once only
    assert budgets.held("calls", "h1") == 1
    assert budgets.hold("calls", "h1") is not None


def test_zero_means_no_limit():
    budgets = SourceBudgets(Clock().seconds, limits={"calls": 0})
    assert all(budgets.request("h") is Verdict.ADMIT for _ in range(10_000))
    assert all(budgets.hold("calls", "h") for _ in range(1000))
    assert budgets.spend("h", 10 ** 9)


def test_spend_takes_what_the_bucket_has_and_one_oversized_item():
    clock = Clock()
    budgets = SourceBudgets(clock.seconds, rate=100, burst=1000)
    assert budgets.spend("h", 600) and not budgets.spend("h", 600)
    clock.advance(10)
    assert budgets.spend("h", 5000)             # full: one item larger than the burst goes
    assert not budgets.spend("h", 1)            # and is paid for
    clock.advance(10)
    assert not budgets.spend("h", 1)
    clock.advance(50)
    assert budgets.spend("h", 1)


# -- the focus ------------------------------------------------------------------

def _rig(limits="", rooms="[room:room]\n"):
    return make_rig(capacity=50, config_text=rooms + "[media]\nrtp_timeout = 0\n"
                    "[limits]\n" + limits)


def _invite(rig, phone, uri=ROOM):
    rig.deliver(phone.request("INVITE", uri, body=SDP), phone.peer)
    return rig.wire.take()[-1]


def test_calls_per_source_and_another_source_still_gets_in():
    rig = _rig("calls_per_source = 3\n")
    for port in range(5200, 5203):
        assert _invite(rig, Phone(port)).status == 200
    refused = _invite(rig, Phone(5203))         # another port of the same host
    assert (refused.status, refused.reason) == (503, "Too Many Calls From Your Address")
    assert refused.headers.get("retry-after")
    other = Phone(5204)
    other.peer = other.peer._replace(host="127.0.0.2")
    assert _invite(rig, other).status == 200
    assert rig.focus.node.load == 4


def test_a_call_that_ends_gives_its_place_back():
    rig = _rig("calls_per_source = 1\n")
    phone = Phone(5210)
    ok = _invite(rig, phone)
    rig.deliver(phone.request("ACK", ROOM, to_tag=ok.to.tag), phone.peer)
    assert _invite(rig, Phone(5211)).status == 503
    rig.deliver(phone.request("BYE", ROOM, to_tag=ok.to.tag), phone.peer)
    assert rig.wire.take(200)
    assert _invite(rig, Phone(5212)).status == 200


def test_rooms_per_source():
    rig = _rig("rooms_per_source = 2\n", rooms="")
    phone = Phone(5220)
    assert _invite(rig, phone, "sip:a@127.0.0.1:5060").status == 200
    assert _invite(rig, phone, "sip:b@127.0.0.1:5060").status == 200
    refused = _invite(rig, phone, "sip:c@127.0.0.1:5060")
    assert (refused.status, refused.reason) == (503, "Too Many Conferences")
    assert sorted(room.name for room in rig.focus.rooms) == ["a", "b"]
    assert _invite(rig, phone, "sip:a@127.0.0.1:5060").status == 200   # joining is not making


def _join(rig, phone):
    ok = _invite(rig, phone)
    rig.deliver(phone.request("ACK", ROOM, to_tag=ok.to.tag), phone.peer)
    return ok


def _leave(rig, phone, ok):
    rig.deliver(phone.request("BYE", ROOM, to_tag=ok.to.tag), phone.peer)


def _subscribe(rig, phone, uri=ROOM, contact=None, expires="600"):
    request = phone.request("SUBSCRIBE", uri, headers=[("Event", "conference"),
                                                       ("Expires", expires)])
    if contact is not None:
        request.headers.set("contact", contact)
    rig.deliver(request, phone.peer)
    return rig.wire.take()


def test_subscriptions_per_source():
    rig = _rig("subscriptions_per_source = 2\n")
    for port in (5230, 5231):
        assert _subscribe(rig, Phone(port))[0].status == 200
    refused = _subscribe(rig, Phone(5232))[0]
    assert (refused.status, refused.reason) == (503, "Too Many Subscriptions From Your Address")
    assert rig.focus.notifier.count == 2


def test_a_subscribe_whose_contact_is_elsewhere_is_refused():
    """Over UDP the NOTIFYs would go to the Contact: another port than the
    SUBSCRIBE's (a third party) is refused, and nothing is sent there."""
    rig = _rig()
    watcher = Phone(5240)
    sent = _subscribe(rig, watcher, contact="<sip:victim@127.0.0.1:5999>")
    assert [(m.status, m.reason) for m in sent] == [
        (403, "Contact Is Not Where The SUBSCRIBE Came From")]
    assert rig.focus.notifier.count == 0
    assert [_kind(m) for m in _subscribe(rig, watcher)] == [200, "NOTIFY"]


def _kind(message):
    return getattr(message, "status", None) or message.method


def test_nothing_more_until_the_first_notify_is_answered_then_what_changed_in_one():
    rig = _rig()
    watcher = Phone(5250)
    sent = _subscribe(rig, watcher)
    assert [_kind(m) for m in sent] == [200, "NOTIFY"]
    first = sent[1]
    for port in (5251, 5252):                   # changes, while the first is unanswered
        _join(rig, Phone(port))
        rig.clock.advance(0.3)
    rig.clock.advance(1)
    assert {n.cseq.seq for n in rig.wire.take("NOTIFY")} == {first.cseq.seq}   # resent only
    answer(rig, [first], watcher.peer)
    owed = rig.wire.take("NOTIFY")              # what it missed, merged into one partial
    assert len(owed) == 1 and b'state="partial"' in owed[0].body
    assert owed[0].body.count(b'<user entity=') == 2
    assert owed[0].cseq.seq == first.cseq.seq + 1


def test_one_notify_in_flight_and_what_changed_meanwhile_follows_merged():
    """A later NOTIFY overtaking an earlier one is refused (RFC 3261
    §12.2.2): while one awaits its answer, changes wait and then go as one
    partial NOTIFY naming every user they touched, as it is now."""
    rig = _rig()
    watcher = Phone(5255)
    answer(rig, [_subscribe(rig, watcher)[1]], watcher.peer)
    joined = Phone(5256)
    ok = _join(rig, joined)
    rig.clock.advance(0.3)
    partial = rig.wire.take("NOTIFY")
    assert len(partial) == 1 and b'state="partial"' in partial[0].body
    _join(rig, Phone(5257))                     # meanwhile: one joins, one leaves
    rig.clock.advance(0.3)
    _leave(rig, joined, ok)
    rig.clock.advance(0.3)
    assert {n.cseq.seq for n in rig.wire.take("NOTIFY")} <= {partial[0].cseq.seq}
    answer(rig, partial, watcher.peer)
    merged = rig.wire.take("NOTIFY")
    assert len(merged) == 1 and merged[0].cseq.seq == partial[0].cseq.seq + 1
    body = merged[0].body
    assert b'state="partial"' in body and body.count(b"<user entity=") == 2
    assert body.count(b'state="deleted"') == 1 and b'version="3"' in body


def test_too_much_waiting_behind_one_notify_becomes_the_full_state():
    rig = _rig("calls_per_source = 0\n")
    watcher = Phone(5265)
    answer(rig, [_subscribe(rig, watcher)[1]], watcher.peer)
    _join(rig, Phone(5266))
    rig.clock.advance(0.3)
    partial = rig.wire.take("NOTIFY")
    for port in range(5267, 5267 + QUEUE_LIMIT + 1):
        _join(rig, Phone(port))
        rig.clock.advance(0.3)
    rig.wire.take("NOTIFY")                     # retransmissions of the one in flight
    answer(rig, partial, watcher.peer)
    owed = rig.wire.take("NOTIFY")
    assert len(owed) == 1 and b'state="full"' in owed[0].body
    assert owed[0].body.count(b"<user entity=") == QUEUE_LIMIT + 2


def test_an_unanswered_first_notify_ends_the_subscription():
    rig = _rig()
    _subscribe(rig, Phone(5260))
    assert rig.focus.notifier.count == 1
    rig.clock.pump([0.5] * 80)                  # Timer F: 64*T1
    assert rig.focus.notifier.count == 0


def test_notify_bytes_per_subscriber_address_are_bounded_and_owed_state_follows():
    rig = _rig("notify_bytes_per_second = 200\nnotify_burst_bytes = 1500\n")
    watchers = [Phone(p) for p in range(5270, 5274)]
    firsts = []
    for w in watchers:
        sent = _subscribe(rig, w)
        if sent[0].status == 200:
            firsts.append((w, sent[1]))
    for w, first in firsts:
        answer(rig, [first], w.peer)
    accepted = len(firsts)
    assert 1 <= accepted < 4                    # the burst ran out
    refused = _subscribe(rig, Phone(5275))[0]
    assert (refused.status, refused.reason) == (503, "Too Many Notifications")
    sent_bytes, last = 0, {}

    def deliver_notifies():
        nonlocal sent_bytes
        for n in rig.wire.take("NOTIFY"):
            sent_bytes += len(n.body)
            last[n.to.uri.port] = n
            answer(rig, [n], next(w.peer for w, _ in firsts if n.to.uri.port == w.port))
    for port in range(5280, 5290):              # ten joins, one at a time
        _join(rig, Phone(port))
        rig.clock.advance(0.3)
        deliver_notifies()
    # 3 s: the burst, 3 s of rate and one oversized full state at most
    assert sent_bytes <= 1500 + 200 * 3 + 3000
    for _ in range(60):                         # the budget comes back: what is owed goes
        rig.clock.advance(1)
        deliver_notifies()
    assert len(last) == accepted
    assert all(n.body.count(b"<user entity=") == 10 for n in last.values())
