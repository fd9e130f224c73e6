"""RFC 3261 §8.2 request inspection and the probe UAS, sans-IO."""

import pytest

from twisted_mfocus.focus.probe import ProbeUAS, default_policy
from twisted_mfocus.sip.address import Peer
from twisted_mfocus.sip.message import parse_datagram

SRC = Peer("UDP", "127.0.0.1", 5070)


def request(method="OPTIONS", uri="sip:probe@127.0.0.1", extra="", body=b"", cseq_method=None):
    head = (f"{method} {uri} SIP/2.0\r\n"
            "Via: SIP/2.0/UDP 127.0.0.1:5070;branch=z9hG4bK-uas-1\r\n"
            "Max-Forwards: 70\r\nFrom: <sip:a@127.0.0.1>;tag=1\r\nTo: <sip:probe@127.0.0.1>\r\n"
            f"Call-ID: uas-test\r\nCSeq: 1 {cseq_method or method}\r\n{extra}"
            f"Content-Length: {len(body)}\r\n\r\n")
    msg = parse_datagram(head.encode() + body)
    msg.validate()
    return msg


class Txn:
    def __init__(self):
        self.responses = []

    def respond(self, response):
        self.responses.append(response)


def answer(req):
    txn = Txn()
    ProbeUAS().request_received(txn, req, SRC)
    assert len(txn.responses) == 1
    return txn.responses[0]


def test_options_advertises_capabilities():
    r = answer(request())
    assert r.status == 200
    for name in ("Allow", "Accept", "Supported"):
        assert name in r.headers
    assert "OPTIONS" in r.headers.get("allow") and "INVITE" in r.headers.get("allow")
    assert r.to.tag, "a final response carries a To tag (§8.2.6.2)"
    assert r.headers.get("call-id") == "uas-test" and str(r.cseq) == "1 OPTIONS"


@pytest.mark.parametrize("method,status", [
    ("REGISTER", 405), ("SUBSCRIBE", 405), ("MESSAGE", 405),
    ("FOOBAR", 501), ("INVITE", 404), ("BYE", 481)])
def test_method_handling(method, status):
    r = answer(request(method))
    assert r.status == status
    if status in (405, 501):
        assert "Allow" in r.headers


def test_unknown_scheme_is_416():
    assert answer(request(uri="nobodyKnowsThisScheme:opaque")).status == 416


def test_unknown_require_is_420_with_unsupported():
    r = answer(request(extra="Require: nothingweknow, other\r\n"))
    assert r.status == 420
    assert r.headers.get("unsupported") == "nothingweknow, other"


def test_unknown_content_type_is_415_with_accept():
    r = answer(request("INVITE", extra="Content-Type: application/unknownformat\r\n", body=b"x"))
    assert r.status == 415 and r.headers.get("accept") == "application/sdp"


def test_unknown_content_encoding_is_415_with_accept_encoding():
    r = answer(request("INVITE", extra="Content-Type: application/sdp\r\nContent-Encoding: gzip\r\n",
                       body=b"v=0\r\n"))
    assert r.status == 415 and r.headers.get("accept-encoding") == "identity"


def test_ack_is_never_refused():
    assert default_policy().inspect(request("ACK")) is None


def test_cancel_answers_481_without_a_matching_invite():
    txn = Txn()
    ProbeUAS().cancel_received(txn, request("CANCEL"), SRC, None)
    assert txn.responses[0].status == 481
