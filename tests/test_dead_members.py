"""Dead members go away (issue 16): a baresip member killed with SIGKILL
sends no BYE; once its RTP has stopped for [media] rtp_timeout the focus
ends the call, the member leaves the API and the conference-info, its
place is taken by a newcomer, and the focus sends it nothing more.  With
[focus] qualify, a member that answers no OPTIONS in its call is ended
too, whatever its RTP does."""

import os
import signal
import socket
import time

import pytest

from .foci import Node, stop_all
from .harness import Sipp, notify_documents, wait_for
from .peers import dial_all, tone_phone
from .peers.process import need

NS = {"ci": "urn:ietf:params:xml:ns:conference-info"}


def watch(node, cwd):
    """A SIPp conference watcher that stays until its NOTIFY terminated."""
    return Sipp("subscriber.xml", f"127.0.0.1:{node.port}", cwd,
                ["-s", "room", "-m", "1", "-set", "expires", "600", "-set", "partials",
                 "1000000", "-set", "refresh", "0", "-set", "unsubscribe", "0"])


def deleted_users(watcher, schema):
    """The users the watcher's conference-info showed deleted (each document
    schema-checked)."""
    return {u.get("entity") for _, doc in notify_documents(watcher, schema)
            for u in doc.iterfind("ci:users/ci:user", NS) if u.get("state") == "deleted"}


@pytest.mark.slow
def test_a_killed_baresip_and_a_silent_sipp_member_are_removed(tmp_path, schema, capsys):
    need("baresip", "sipp")
    node = Node("focus", "primary", 2, tmp_path, "[media]\nrtp_timeout = 5\n").start()
    alice, bob = (tone_phone(tmp_path, name, freq) for name, freq in
                  (("alice", 440.0), ("bob", 660.0)))
    carol = tone_phone(tmp_path, "carol", 880.0)
    sipp = watcher = None
    try:
        watcher = watch(node, tmp_path)
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
        node.process.stop()             # SIGTERM: the watcher's NOTIFY terminated
        assert watcher.wait() == 0, watcher.errors()
        with capsys.disabled():
            print(f"\n  killed baresip member removed {gone:.1f} s after SIGKILL "
                  f"(rtp_timeout 5 s, checked every 5 s)")
    finally:
        for p in (alice, bob, carol):
            p.stop()
        stop_all([node], *(s for s in [sipp, watcher] if s))
    # The watcher's conference-info showed both dead members deleted.
    deleted = deleted_users(watcher, schema)
    assert {bob.aor, f"sip:member1@127.0.0.1:{sipp.port}"} <= deleted, deleted


def test_qualify_finds_a_killed_sipp_member_and_keeps_a_live_phone(tmp_path, schema, capsys):
    """``[focus] qualify``: a SIPp member killed with SIGKILL answers no
    OPTIONS and is ended within qualify + 64*T1 (RTP timeouts off, so
    nothing else could end it); a watcher's conference-info shows it
    deleted; a baresip member that answers its OPTIONS stays."""
    need("baresip", "sipp")
    node = Node("focus", "primary", 4, tmp_path,
                "[focus]\nqualify = 3\n[sip]\nt1 = 0.05\n[media]\nrtp_timeout = 0\n").start()
    alice = tone_phone(tmp_path, "alice", 440.0)
    watcher = member = None
    try:
        watcher = watch(node, tmp_path)
        dial_all([alice], f"sip:room@127.0.0.1:{node.port}")
        member = Sipp("member.xml", f"127.0.0.1:{node.port}", tmp_path,
                      ["-s", "room", "-m", "1", "-set", "wait_bye", "1"], timeout=60)
        uri = f"sip:member1@127.0.0.1:{member.port}"

        def members():
            return sorted(m["uri"] for m in (node.conference("room") or {}).get("members", []))
        assert wait_for(lambda: uri in members(), timeout=10)
        member.kill()                   # before its first OPTIONS: it answers none
        killed = time.monotonic()
        assert wait_for(lambda: members() == [alice.aor], timeout=3 + 64 * 0.05 + 3)
        gone = time.monotonic() - killed
        time.sleep(7)                   # two more qualify rounds: alice answers them
        assert members() == [alice.aor]
        log = node.process.log()
        node.process.stop()             # SIGTERM: the watcher's NOTIFY terminated
        assert watcher.wait() == 0, watcher.errors()
    finally:
        alice.stop()
        stop_all([node], *(s for s in (watcher, member) if s))
    assert "no answer to OPTIONS: ending the call" in log
    deleted = deleted_users(watcher, schema)
    assert uri in deleted, deleted
    with capsys.disabled():
        print(f"\n  killed SIPp member removed {gone:.1f} s after SIGKILL "
              f"(qualify 3 s, 64*T1 = {64 * 0.05:.1f} s)")
