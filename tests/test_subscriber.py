"""The subscriber side of SIP events (focus/subscriber.py) on a Clock:
a NOTIFY that overtakes the answer to our SUBSCRIBE makes the dialog, but
only if it can (RFC 6665 §4.1.2.4, RFC 3261 §12.1.2)."""

from twisted_mfocus.focus.subscriber import Subscriber, SubscriberState
from twisted_mfocus.sip.address import Peer
from twisted_mfocus.sip.message import parse_datagram

from .focusrig import make_rig

WATCHED = "sip:room@127.0.0.1:5090"


def _subscribe(rig, notified):
    text = (f"SUBSCRIBE {WATCHED} SIP/2.0\r\n"
            "Via: SIP/2.0/UDP 127.0.0.1:5060;branch=z9hG4bKsub1\r\n"
            "Max-Forwards: 70\r\n"
            "From: <sip:room@127.0.0.1:5060>;tag=ours\r\n"
            f"To: <{WATCHED}>\r\n"
            "Call-ID: watch-1\r\nCSeq: 1 SUBSCRIBE\r\n"
            "Contact: <sip:room@127.0.0.1:5060>\r\n"
            "Event: conference\r\nExpires: 600\r\nContent-Length: 0\r\n\r\n")
    sub = Subscriber(rig.focus.ua, rig.focus.policy, parse_datagram(text.encode()),
                     notified.append)
    sub.start()
    assert rig.wire.take("SUBSCRIBE")
    return sub


def _notify(contact, cseq):
    lines = ["NOTIFY sip:room@127.0.0.1:5060 SIP/2.0",
             "Via: SIP/2.0/UDP 127.0.0.1:5090;branch=z9hG4bKn" + ("c" if contact else "x"),
             "Max-Forwards: 70",
             f"From: <{WATCHED}>;tag=theirs",
             "To: <sip:room@127.0.0.1:5060>;tag=ours",
             "Call-ID: watch-1", f"CSeq: {cseq} NOTIFY",
             "Event: conference", "Subscription-State: active;expires=600"]
    if contact:
        lines.append(f"Contact: <{WATCHED}>")
    lines.append("Content-Length: 0")
    return parse_datagram(("\r\n".join(lines) + "\r\n\r\n").encode())


def test_a_notify_without_contact_before_the_answer_is_refused_not_a_crash():
    rig = make_rig()
    notified = []
    sub = _subscribe(rig, notified)
    peer = Peer("UDP", "127.0.0.1", 5090)
    rig.deliver(_notify(contact=False, cseq=1), peer)
    refused = rig.wire.take(400)
    assert [r.reason for r in refused] == ["Dialog needs exactly one Contact"]
    assert sub.dialog is None and sub.state is SubscriberState.PENDING and not notified
    rig.deliver(_notify(contact=True, cseq=2), peer)     # a proper one still makes the dialog
    assert rig.wire.take(200)
    assert sub.dialog is not None and sub.state is SubscriberState.ACTIVE
    assert len(notified) == 1
