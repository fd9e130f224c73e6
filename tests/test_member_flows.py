"""A member's TCP connection lives as long as its call (RFC 5626 §4.4):
[sip] idle_timeout closes idle connections, but not one a dialog uses, so
the focus's BYE still reaches a phone behind a NAT over its own flow."""

import re
import select
import time

from . import sipclient
from .foci import Node, stop_all


def _open(sock):
    r, _, _ = select.select([sock], [], [], 0)
    if not r:
        return True
    return sock.recv(65535, 0x40) != b""          # MSG_DONTWAIT: data, not EOF


def test_a_calls_tcp_connection_outlives_the_idle_timeout(tmp_path):
    node = Node("focus", "primary", 5, tmp_path,
                "[sip]\nidle_timeout = 1\n[media]\nrtp_timeout = 0\n").start()
    member, idle = sipclient.TCP(node.port), sipclient.TCP(node.port)
    try:
        ruri = f"sip:room@127.0.0.1:{node.port}"
        status, ok = member.ask(sipclient.request(
            "INVITE", ruri, member.port, "TCP", body=sipclient.SDP, call_id="tcp-1",
            from_tag="t1"))
        assert status == 200, ok
        to_tag = re.search(r"^To:.*;tag=([^;\s]+)", ok, re.M).group(1)
        member.sock.sendall(sipclient.request("ACK", ruri, member.port, "TCP", call_id="tcp-1",
                                              from_tag="t1", to_tag=to_tag))
        time.sleep(3)                           # three idle timeouts
        assert not _open(idle.sock)             # no dialog: closed
        assert _open(member.sock)               # the call's flow: kept
        member.buffer = b""
        status, _ = member.ask(sipclient.request("BYE", ruri, member.port, "TCP",
                                                 call_id="tcp-1", from_tag="t1",
                                                 to_tag=to_tag, cseq=2))
        assert status == 200
        time.sleep(3)                           # the call is over: idle again
        assert not _open(member.sock)
    finally:
        member.close()
        idle.close()
        stop_all([node])
