"""Dead members go away (issue 16): a baresip member killed with SIGKILL
sends no BYE; once its RTP has stopped for [media] rtp_timeout the focus
ends the call, the member leaves the API and the conference-info, its
place is taken by a newcomer, and the focus sends it nothing more."""

import os
import signal
import socket
import time

import pytest

from .foci import Node, stop_all
from .harness import Sipp, wait_for
from .peers import dial_all, tone_phone
from .peers.process import need


@pytest.mark.slow
def test_a_killed_baresip_and_a_silent_sipp_member_are_removed(tmp_path, capsys):
    need("baresip", "sipp")
    node = Node("focus", "primary", 2, tmp_path, "[media]\nrtp_timeout = 5\n").start()
    alice, bob = (tone_phone(tmp_path, name, freq) for name, freq in
                  (("alice", 440.0), ("bob", 660.0)))
    carol = tone_phone(tmp_path, "carol", 880.0)
    sipp = None
    try:
        dial_all([alice, bob], f"sip:room@127.0.0.1:{node.port}")
        assert wait_for(lambda: len((node.conference("room") or {}).get("members", [])) == 2)
        # The focus is full (capacity 2): kill -9 bob, no BYE.
        os.kill(bob.proc.pid, signal.SIGKILL)
        bob.proc.wait(5)
        killed = time.monotonic()
        assert wait_for(lambda: [m["uri"].split("@")[0] for m in
                                 node.conference("room")["members"]] == ["sip:alice"],
                        timeout=5 + 5 + 1)
        gone = time.monotonic() - killed
        # Its place is free: carol gets in.
        dial_all([carol], f"sip:room@127.0.0.1:{node.port}")
        assert len(node.conference("room")["members"]) == 2
        # The focus sends bob's old port nothing more.
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
            s.bind(("127.0.0.1", bob.rtp_low))
            s.settimeout(1.0)
            try:
                s.recv(2048)
                got = True
            except socket.timeout:
                got = False
        assert not got, "the focus still sends RTP to the dead member"
        # A SIPp member sends no RTP at all: it is ended the same way.
        carol.stop()
        sipp = Sipp("member.xml", f"127.0.0.1:{node.port}", tmp_path,
                    ["-s", "room", "-m", "1", "-set", "wait_bye", "1"], timeout=30)
        assert sipp.wait() == 0, sipp.errors()    # it got the focus's BYE
        assert "BYE from the focus" in "\n".join(sipp.logs())
        with capsys.disabled():
            print(f"\n  killed baresip member removed {gone:.1f} s after SIGKILL "
                  f"(rtp_timeout 5 s, checked every 5 s)")
    finally:
        for p in (alice, bob, carol):
            p.stop()
        stop_all([node], *(s for s in [sipp] if s))
