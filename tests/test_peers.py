"""The peer controllers of tests/peers.py work on their own, without the focus.

(a) baresip calls baresip directly: B auto-answers, both see the call
    established, RTP flows, A hangs up and B sees the call closed.
(b) linphonec registers through our Kamailio: ``proxy list`` says
    ``registered: yes`` and Kamailio really holds the binding (a request
    for the AoR is relayed to linphonec, which answers it).
"""

import re
import socket
import uuid

import pytest

from .peers import Baresip, Kamailio, Linphonec, free_port, free_sip_port, port_free
from .peers.process import need, rtp_base





def test_baresip_calls_baresip(tmp_path):
    need("baresip")
    a = Baresip(tmp_path / "a", "alice", free_sip_port(), rtp_base(), free_port())
    b = Baresip(tmp_path / "b", "bob", free_sip_port(), rtp_base(), free_port())
    try:
        b.start()
        a.start()
        assert a.calls() == [] and b.calls() == []
        a.dial(f"sip:bob@127.0.0.1:{b.sip_port}")
        est_a = a.wait_event("CALL_ESTABLISHED", 8)
        est_b = b.wait_event("CALL_ESTABLISHED", 8)
        assert f"127.0.0.1:{b.sip_port}" in est_a.get("peeruri", ""), est_a
        assert "alice" in est_b.get("peeruri", ""), est_b
        assert est_a.get("direction") == "outgoing", est_a
        assert est_b.get("direction") == "incoming", est_b
        # media: both sides receive RTP from each other on loopback
        a.wait_event("CALL_RTPESTAB", 5)
        b.wait_event("CALL_RTPESTAB", 5)
        assert len(a.calls()) == 1 and len(b.calls()) == 1, (a.calls(), b.calls())
        a.hangup()
        a.wait_event("CALL_CLOSED", 5)
        b.wait_event("CALL_CLOSED", 5)
        assert b.calls() == [] and a.calls() == []
        assert a.alive() and b.alive()
    finally:
        a.stop()
        b.stop()
    assert port_free(a.sip_port) and port_free(b.sip_port), "baresip left its port bound"


def test_baresip_refuses_a_busy_port(tmp_path):
    need("baresip")
    port = free_port()
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.bind(("127.0.0.1", port))
        phone = Baresip(tmp_path, "busy", port, rtp_base(), free_port())
        with pytest.raises(RuntimeError, match="busy"):
            phone.start()
        assert phone.proc is None


def test_linphonec_registers_through_kamailio(tmp_path):
    need("linphonec", "kamailio")
    kam = Kamailio(tmp_path / "kam", free_port(), free_port())
    ok, out = kam.check()
    assert ok, out
    carol = Linphonec(tmp_path / "carol", "carol", free_port(),
                      register_via=f"127.0.0.1:{kam.port}")
    try:
        kam.start()
        carol.start()                      # waits for "registered: yes"
        assert carol.proxy_registered()
        # Kamailio has the binding: an OPTIONS to the AoR is relayed to linphonec's contact
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
            s.bind(("127.0.0.1", 0))
            s.settimeout(5)
            lport = s.getsockname()[1]
            call_id = uuid.uuid4().hex
            s.sendto((f"OPTIONS sip:carol@127.0.0.1:{kam.port} SIP/2.0\r\n"
                      f"Via: SIP/2.0/UDP 127.0.0.1:{lport};branch=z9hG4bK{call_id[:10]};rport\r\n"
                      f"Max-Forwards: 70\r\n"
                      f"From: <sip:probe@127.0.0.1:{lport}>;tag=1\r\n"
                      f"To: <sip:carol@127.0.0.1:{kam.port}>\r\n"
                      f"Call-ID: {call_id}\r\nCSeq: 1 OPTIONS\r\n"
                      f"Content-Length: 0\r\n\r\n").encode(), ("127.0.0.1", kam.port))
            reply = s.recv(65535).decode("utf-8", "replace")
        assert reply.startswith("SIP/2.0 200"), reply
        assert "REGISTER" in carol.log_text() and "200" in carol.log_text()
        assert kam.alive()
    finally:
        carol.stop()
        kam.stop()
    assert not kam.alive()
    assert port_free(carol.sip_port, kinds=(socket.SOCK_DGRAM,)), "linphonec left its port bound"


def test_linphonec_calls_baresip(tmp_path):
    need("linphonec", "baresip")
    bob = Baresip(tmp_path / "bob", "bob", free_sip_port(), rtp_base(), free_port())
    dave = Linphonec(tmp_path / "dave", "dave", free_port())
    try:
        bob.start()
        dave.start()
        dave.call(f"sip:bob@127.0.0.1:{bob.sip_port}")
        dave.wait_output(r"Call \d+ with .*bob.* connected", 10)
        est = bob.wait_event("CALL_ESTABLISHED", 5)
        assert "dave" in est.get("peeruri", ""), est
        dave.send("terminate")
        bob.wait_event("CALL_CLOSED", 5)
        dave.wait_output(r"ended", 5)
        log = dave.log_text()
        assert "INVITE sip:bob@127.0.0.1" in log
        # media stays on loopback too: every SDP connection address linphonec logged
        # (its offer and baresip's answer) is 127.0.0.1, not the default route's address
        addresses = set(re.findall(r"c=IN IP[46] (\S+)", log))
        assert addresses == {"127.0.0.1"}, addresses
    finally:
        dave.stop()
        bob.stop()
