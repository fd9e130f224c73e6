"""Sans-IO routing rules: RFC 3261 §18.2.1/§18.2.2, RFC 3581, §8.1.2, RFC 3263
server selection and RFC 2782 ordering."""

import random

import pytest

from twisted_mfocus.sip.address import Peer
from twisted_mfocus.sip.message import make_response, parse_datagram
from twisted_mfocus.sip.routing import (
    SRV, is_ip_literal, next_hop, response_destination, rewrite_top_via,
    same_address, server_target, sort_srv, srv_queries, stamp_received,
    strip_brackets)
from twisted_mfocus.sip.uri import URI


def request(via="SIP/2.0/UDP 192.0.2.1:5060;branch=z9hG4bK776", extra="",
            uri="sip:conf@example.com"):
    text = (f"OPTIONS {uri} SIP/2.0\r\n"
            f"Via: {via}\r\n"
            f"{extra}"
            "Max-Forwards: 70\r\n"
            "From: <sip:a@example.com>;tag=1\r\n"
            f"To: <{uri}>\r\n"
            "Call-ID: abc@192.0.2.1\r\n"
            "CSeq: 1 OPTIONS\r\n"
            "Content-Length: 0\r\n\r\n")
    msg = parse_datagram(text.encode())
    msg.validate()
    return msg


UDP_SRC = Peer("UDP", "192.0.2.1", 5060)


# -- §18.2.1 / RFC 3581 §4 stamping -------------------------------------------------

def test_same_host_no_rport_is_untouched():
    req = request()
    before = req.to_bytes()
    assert stamp_received(req, UDP_SRC) is False
    assert req.to_bytes() == before


def test_received_added_when_host_differs():
    req = request()
    stamp_received(req, Peer("UDP", "198.51.100.7", 5060))
    assert req.top_via.received == "198.51.100.7"
    assert req.top_via.branch == "z9hG4bK776"
    assert "rport" not in req.top_via.params


def test_received_added_for_a_hostname_sent_by():
    req = request(via="SIP/2.0/UDP pc33.example.com;branch=z9hG4bK1")
    stamp_received(req, Peer("UDP", "192.0.2.9", 5060))
    assert req.top_via.received == "192.0.2.9"


def test_existing_received_is_replaced_by_real_source():
    req = request(via="SIP/2.0/UDP 192.0.2.1;received=10.9.9.9;branch=z9hG4bK1")
    stamp_received(req, Peer("UDP", "192.0.2.1", 5060))
    assert req.top_via.received == "192.0.2.1"
    assert req.headers.get_all("via")[0].count("received") == 1


def test_rfc3581_bare_rport_filled_and_received_set_even_if_same_host():
    # RFC 3581 §4 example: the server MUST add received even when equal.
    req = request(via="SIP/2.0/UDP 192.0.2.1:5060;rport;branch=z9hG4bKkjshdyff")
    stamp_received(req, Peer("UDP", "192.0.2.1", 9988))
    via = req.top_via
    assert via.rport == 9988
    assert via.received == "192.0.2.1"


def test_rfc3581_nat_example():
    # RFC 3581 §4: client 10.1.1.1:5060 behind a NAT seen as 192.0.2.1:9988.
    req = request(via="SIP/2.0/UDP 10.1.1.1:4540;rport;branch=z9hG4bKkjshdyff")
    stamp_received(req, Peer("UDP", "192.0.2.1", 9988))
    assert str(req.top_via) == \
        "SIP/2.0/UDP 10.1.1.1:4540;rport=9988;branch=z9hG4bKkjshdyff;received=192.0.2.1"


def test_filled_rport_is_left_alone():
    req = request(via="SIP/2.0/UDP 10.1.1.1:4540;rport=1111;branch=z9hG4bK1")
    stamp_received(req, Peer("UDP", "192.0.2.1", 9988))
    assert req.top_via.rport == 1111
    assert req.top_via.received == "192.0.2.1"


def test_only_top_via_changes():
    req = request(via="SIP/2.0/UDP 10.1.1.1;branch=z9hG4bK1, SIP/2.0/TCP  p.example.com ;branch=z9hG4bK2",
                  extra="Via: SIP/2.0/UDP 10.0.0.3;received=1.2.3.4;branch=z9hG4bK3\r\n")
    stamp_received(req, Peer("UDP", "192.0.2.1", 5060))
    lines = req.headers.lines("via")
    assert lines[0] == "SIP/2.0/UDP 10.1.1.1;branch=z9hG4bK1;received=192.0.2.1"
    assert lines[1] == "SIP/2.0/TCP  p.example.com ;branch=z9hG4bK2"
    assert lines[2] == "SIP/2.0/UDP 10.0.0.3;received=1.2.3.4;branch=z9hG4bK3"
    assert [v.branch for v in req.vias] == ["z9hG4bK1", "z9hG4bK2", "z9hG4bK3"]


def test_ipv6_via_same_address_in_other_spelling():
    req = request(via="SIP/2.0/UDP [2001:db8:0:0::1]:5060;branch=z9hG4bK1")
    assert stamp_received(req, Peer("UDP", "2001:db8::1", 5060)) is False


def test_ipv6_via_received_without_brackets_and_rport():
    # RFC 5118 §4.5: received carries the address without brackets.
    req = request(via="SIP/2.0/UDP [2001:db8::9]:5060;rport;branch=z9hG4bK1")
    stamp_received(req, Peer("UDP", "2001:db8::1", 40000))
    via = req.top_via
    assert via.received == "2001:db8::1"
    assert via.rport == 40000
    assert via.host == "[2001:db8::9]"
    resp = make_response(req, 200)
    assert response_destination(resp, Peer("UDP", "2001:db8::1", 40000)) == \
        Peer("UDP", "2001:db8::1", 40000)


# -- §18.2.2 response destination --------------------------------------------------

def response_to(via, source):
    req = request(via=via)
    stamp_received(req, source)
    return make_response(req, 200)


def test_response_udp_to_sent_by_port():
    resp = response_to("SIP/2.0/UDP 192.0.2.1:5070;branch=z9hG4bK1",
                       Peer("UDP", "192.0.2.1", 33333))
    assert response_destination(resp, Peer("UDP", "192.0.2.1", 33333)) == \
        Peer("UDP", "192.0.2.1", 5070)


def test_response_udp_to_received_and_default_port():
    src = Peer("UDP", "198.51.100.7", 41000)
    resp = response_to("SIP/2.0/UDP host.example.com;branch=z9hG4bK1", src)
    assert response_destination(resp, src) == Peer("UDP", "198.51.100.7", 5060)


def test_response_udp_rport_returns_to_source_port():
    src = Peer("UDP", "192.0.2.1", 9988)
    resp = response_to("SIP/2.0/UDP 10.1.1.1:4540;rport;branch=z9hG4bK1", src)
    assert response_destination(resp, src) == src


def test_response_udp_maddr():
    src = Peer("UDP", "192.0.2.1", 9988)
    resp = response_to("SIP/2.0/UDP 192.0.2.1:5080;maddr=239.255.255.1;ttl=1;branch=z9hG4bK1",
                       src)
    assert response_destination(resp, src) == Peer("UDP", "239.255.255.1", 5080)
    resp = response_to("SIP/2.0/UDP 192.0.2.1;maddr=192.0.2.50;branch=z9hG4bK1", src)
    assert response_destination(resp, src) == Peer("UDP", "192.0.2.50", 5060)


def test_response_reliable_uses_connection_then_received_sent_by_port():
    src = Peer("TCP", "198.51.100.7", 50123)
    resp = response_to("SIP/2.0/TCP client.example.com:5062;branch=z9hG4bK1", src)
    assert response_destination(resp, src) == src
    assert response_destination(resp, src, reuse=False) == Peer("TCP", "198.51.100.7", 5062)
    src = Peer("TLS", "198.51.100.7", 50123)
    resp = response_to("SIP/2.0/TLS client.example.com;branch=z9hG4bK1", src)
    assert response_destination(resp, src, reuse=False) == Peer("TLS", "198.51.100.7", 5061)


def test_response_reliable_maddr_ignored():
    src = Peer("TCP", "192.0.2.1", 50123)
    resp = response_to("SIP/2.0/TCP 192.0.2.1;maddr=192.0.2.50;branch=z9hG4bK1", src)
    assert response_destination(resp, src, reuse=False) == Peer("TCP", "192.0.2.1", 5060)


def test_rewrite_top_via_for_tcp_switch():
    req = request()
    rewrite_top_via(req, "TCP", 5070)
    assert str(req.top_via) == "SIP/2.0/TCP 192.0.2.1:5070;branch=z9hG4bK776"


# -- §8.1.2 next hop -----------------------------------------------------------------

def test_next_hop_request_uri_without_route():
    assert next_hop(request()) == URI.parse("sip:conf@example.com")


def test_next_hop_loose_route():
    req = request(extra="Route: <sip:p1.example.com;lr>, <sip:p2.example.com;lr>\r\n")
    assert next_hop(req) == URI.parse("sip:p1.example.com;lr")


def test_next_hop_strict_router_is_request_uri():
    # §12.2.1.1: the strict router was put in the Request-URI already.
    req = request(uri="sip:strict.example.com",
                  extra="Route: <sip:p2.example.com>, <sip:remote@192.0.2.4>\r\n")
    assert next_hop(req) == URI.parse("sip:strict.example.com")


# -- RFC 3263 §4 ----------------------------------------------------------------------

def target(text):
    return server_target(URI.parse(text))


def test_ip_literal_with_port_needs_no_dns():
    t = target("sip:alice@192.0.2.4:5070")
    assert t.numeric and t.peer() == Peer("UDP", "192.0.2.4", 5070)
    assert srv_queries(t) == []


def test_ip_literal_defaults():
    assert target("sip:192.0.2.4").peer() == Peer("UDP", "192.0.2.4", 5060)
    assert target("sips:192.0.2.4").peer() == Peer("TLS", "192.0.2.4", 5061)
    assert target("sip:192.0.2.4;transport=tcp").peer() == Peer("TCP", "192.0.2.4", 5060)
    assert target("sip:[2001:db8::1]:5070;transport=TCP").peer() == \
        Peer("TCP", "2001:db8::1", 5070)


def test_transport_param_and_sips():
    assert target("sip:example.com;transport=tcp").transport == "TCP"
    assert target("sip:example.com;transport=tls").transport == "TLS"
    assert target("sips:example.com;transport=tcp").transport == "TLS"
    t = target("sips:example.com")
    assert t.transport is None and t.secure


def test_maddr_is_the_target():
    t = target("sip:bob@example.com;maddr=192.0.2.77")
    assert t.numeric and t.peer() == Peer("UDP", "192.0.2.77", 5060)


def test_srv_queries():
    assert srv_queries(target("sip:example.com")) == [
        ("_sip._udp.example.com", "UDP"), ("_sip._tcp.example.com", "TCP"),
        ("_sips._tcp.example.com", "TLS")]
    assert srv_queries(target("sip:example.com;transport=tcp")) == [
        ("_sip._tcp.example.com", "TCP")]
    assert srv_queries(target("sips:example.com")) == [("_sips._tcp.example.com", "TLS")]
    # §4.2: an explicit port means A/AAAA only, with UDP for sip:.
    t = target("sip:example.com:5080")
    assert srv_queries(t) == [] and t.transport == "UDP"
    assert srv_queries(target("sip:example.com"), supported=("UDP",)) == [
        ("_sip._udp.example.com", "UDP")]


def test_non_sip_uri_refused():
    with pytest.raises(ValueError):
        target("tel:+15551234")


def test_helpers():
    assert strip_brackets("[::1]") == "::1"
    assert is_ip_literal("[::1]") and is_ip_literal("10.0.0.1")
    assert not is_ip_literal("example.com")
    assert same_address("EXAMPLE.com", "example.com")
    assert not same_address("10.0.0.1", "10.0.0.2")


# -- RFC 2782 ordering ---------------------------------------------------------------

def test_sort_srv_priority_first():
    recs = [SRV(20, 0, 5060, "c"), SRV(10, 0, 5060, "a"), SRV(10, 0, 5060, "b")]
    out = sort_srv(recs, random.Random(1))
    assert {r.target for r in out[:2]} == {"a", "b"} and out[2].target == "c"


def test_sort_srv_weights_distribute():
    recs = [SRV(10, 90, 5060, "heavy"), SRV(10, 10, 5060, "light")]
    rng = random.Random(42)
    firsts = [sort_srv(recs, rng)[0].target for _ in range(2000)]
    share = firsts.count("heavy") / len(firsts)
    assert 0.85 < share < 0.95
    assert all(len(sort_srv(recs, rng)) == 2 for _ in range(10))


def test_sort_srv_zero_weight_still_chosen_and_dot_dropped():
    recs = [SRV(10, 0, 5060, "zero"), SRV(10, 0, 5060, "zero2")]
    assert len(sort_srv(recs, random.Random(3))) == 2
    assert sort_srv([SRV(0, 0, 0, ".")]) == []


def test_correct_received_left_as_it_came():
    req = request(via="SIP/2.0/UDP host.example.com;Received=192.0.2.1;branch=z9hG4bK1")
    before = req.to_bytes()
    assert stamp_received(req, Peer("UDP", "192.0.2.1", 5060)) is False
    assert req.to_bytes() == before
