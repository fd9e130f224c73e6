"""The SIPp scenarios the multi-focus tests use, checked SIPp against SIPp.

No mfocus here: each scenario of tests/sipp/ runs against a driver of
tests/sipp/selftest/ playing the other side, on 127.0.0.1, and the tests
assert on exit codes, ``<log>`` lines and ``-trace_msg`` messages.
"""

import os
import re
import socket
import time
from datetime import datetime

import pytest

from .harness import Sipp, free_port, sip_header

pytestmark = pytest.mark.skipif(
    not any(os.access(os.path.join(d, "sipp"), os.X_OK)
            for d in os.environ.get("PATH", "").split(os.pathsep)),
    reason="sipp not installed")


class Run(Sipp):
    """``Sipp`` with a timestamped view of its message trace."""

    def timed(self):
        """[(datetime, 'sent'|'received', message)] from the -trace_msg file."""
        out = []
        parts = re.split(r"^-{20,} (\S+ \S+)\n", self._read("_messages.log"), flags=re.M)
        for stamp, block in zip(parts[1::2], parts[2::2]):
            kind, _, message = block.partition("\n")
            if message.strip():
                out.append((datetime.strptime(stamp, "%Y-%m-%d %H:%M:%S.%f"),
                            "received" if " received " in kind else "sent",
                            message.strip("\n")))
        return out


def start(scenario, target, tmp_path, args, name=None, timeout=30):
    sipp = Run(scenario, target, tmp_path, list(args), timeout=timeout, name=name)
    time.sleep(0.1)
    return sipp


def finish(*runs):
    for run in runs:
        assert run.wait() == 0, (run.scenario, run.errors())


def request_line(message):
    return message.split("\n", 1)[0].strip()


class Trap:
    """A UDP socket that must stay silent (the primary's address)."""

    def __init__(self):
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.sock.bind(("127.0.0.1", 0))
        self.sock.setblocking(False)
        self.port = self.sock.getsockname()[1]

    def received(self):
        got = []
        while True:
            try:
                got.append(self.sock.recv(65535))
            except BlockingIOError:
                return got

    def close(self):
        self.sock.close()


# -- member_dialin.xml ---------------------------------------------------------

def test_member_dialin_focus_bye_or_own_bye_after_hold(tmp_path):
    primary = start("selftest/dialin_uas.xml", None, tmp_path, ["-m", "2"])
    member = start("member_dialin.xml", f"127.0.0.1:{primary.port}", tmp_path,
                   ["-s", "room", "-m", "2", "-l", "2", "-r", "10", "-set", "hold_ms", "1500"])
    finish(member, primary)
    logs = member.logs()
    assert logs.count("bye-received") == 1 and logs.count("hangup 200") == 1
    assert [line for line in logs if line.startswith("joined ")] == [
        f"joined <sip:room@127.0.0.1:{primary.port}>;isfocus to "
        f"<sip:room@127.0.0.1:{primary.port}>;tag={primary.proc.pid}SIPpTag01{n}" for n in (1, 2)]
    assert "focus-bye-answered member1" in primary.logs()
    assert any(line.startswith("member-bye member2 ") for line in primary.logs())
    # Each INVITE's Contact is the member's own port by default.
    invites = [m for m in member.messages(received=False) if m.startswith("INVITE ")]
    assert [sip_header(m, "Contact") for m in invites] == [
        f"<sip:member{n}@127.0.0.1:{member.port};transport=UDP>" for n in (1, 2)]
    # member2 hung up itself, hold_ms after its ACK, in the dialog's route set.
    trace = member.timed()
    ack = next(t for t, way, m in trace if way == "sent" and m.startswith("ACK ")
               and sip_header(m, "Call-ID").startswith("2-"))
    bye_at, _, bye = next((t, w, m) for t, w, m in trace if w == "sent" and m.startswith("BYE "))
    assert request_line(bye) == f"BYE sip:room@127.0.0.1:{primary.port} SIP/2.0"
    assert sip_header(bye, "Route") == f"<sip:127.0.0.1:{primary.port};lr>"
    assert 1.4 <= (bye_at - ack).total_seconds() < 2.5


def test_member_dialin_contact_port_default_hold_and_481(tmp_path):
    contact_port = free_port()
    primary = start("selftest/dialin_uas.xml", None, tmp_path,
                    ["-m", "1", "-set", "focus_bye", "0", "-set", "bye_code", "481"])
    member = start("member_dialin.xml", f"127.0.0.1:{primary.port}", tmp_path,
                   ["-s", "room", "-m", "1", "-set", "contact_port", str(contact_port)])
    finish(member, primary)
    assert f"invite member1 contact 127.0.0.1:{contact_port} sip:member1@127.0.0.1:{contact_port}" \
        in primary.logs()
    assert member.logs()[-1] == "hangup 481"
    trace = member.timed()
    ack = next(t for t, w, m in trace if w == "sent" and m.startswith("ACK "))
    bye = next(t for t, w, m in trace if w == "sent" and m.startswith("BYE "))
    assert 3.9 <= (bye - ack).total_seconds() < 5.0      # hold_ms defaults to 4000


# -- member_handover.xml -------------------------------------------------------

def test_member_handover_routes_its_bye_through_the_record_route(tmp_path):
    primary = Trap()               # the conference URI's host:port: must hear nothing
    try:
        member = start("member_handover.xml", None, tmp_path,
                       ["-m", "5", "-set", "hold_ms", "800"], timeout=40)
        target = f"127.0.0.1:{member.port}"
        # Two handovers (the first with Replaces), the member hangs up each.
        secondary = start("selftest/secondary_uac.xml", target, tmp_path,
                          ["-m", "2", "-l", "2", "-r", "10",
                           "-set", "primary_port", str(primary.port)], name="secondary")
        # The secondary hangs up first: the BYE comes during the hold.
        ender = start("selftest/secondary_uac.xml", target, tmp_path,
                      ["-m", "1", "-set", "primary_port", str(primary.port),
                       "-set", "mode", "focus_bye"], name="ender")
        # Record-Route names another address than the INVITE's source.
        sink = start("selftest/bye_sink.xml", None, tmp_path, ["-m", "1"])
        elsewhere = start("selftest/secondary_uac.xml", target, tmp_path,
                          ["-m", "1", "-set", "primary_port", str(primary.port),
                           "-set", "mode", "ack_only", "-set", "rr_port", str(sink.port)],
                          name="elsewhere")
        # The primary ends the first dialog: a BYE of a Call-ID never seen here.
        old = start("selftest/old_bye_uac.xml", target, tmp_path, ["-m", "1"])
        finish(secondary, ender, elsewhere, old, sink, member)
        time.sleep(0.2)
        assert primary.received() == []
    finally:
        primary.close()

    conf = f"sip:room@127.0.0.1:{primary.port}"
    logs = member.logs()
    invites = [line for line in logs if line.startswith("invite ")]
    assert len(invites) == 4
    expected = (f"invite member1 from <sip:room@127.0.0.1:{primary.port}>;tag="
                f"{secondary.proc.pid}Sec1 contact <{conf}>;isfocus replaces old-1@127.0.0.1;"
                f"to-tag=tt1;from-tag=ff1 rr <sip:127.0.0.1:{secondary.port};lr> call ")
    assert any(line.startswith(expected) for line in invites), invites
    assert any(line.startswith("invite member2 ") and " replaces  rr " in line for line in invites)
    assert logs.count(f"bye-to 127.0.0.1:{secondary.port}") == 2
    assert logs.count(f"bye-to 127.0.0.1:{sink.port}") == 1
    assert logs.count("hangup 200") == 3
    assert logs.count("bye-received") == 1
    assert [line for line in logs if line.startswith("old-dialog-bye ")] == [
        f"old-dialog-bye 1-{old.proc.pid}@127.0.0.1"]

    # The 200s copy the Record-Route; the BYEs come back to the secondary
    # with the conference URI as Request-URI and the Record-Route as Route.
    assert secondary.logs().count(f"answered rr <sip:127.0.0.1:{secondary.port};lr> "
                                  f"contact sip:member1@{target};transport=UDP "
                                  f"<sip:member1@{target};transport=UDP>") == 1
    byes = [m for m in secondary.messages(received=True) if m.startswith("BYE ")]
    assert len(byes) == 2
    for bye in byes:
        assert request_line(bye) == f"BYE {conf} SIP/2.0"
        assert sip_header(bye, "Route") == f"<sip:127.0.0.1:{secondary.port};lr>"
    sent = [m for m in member.messages(received=False) if m.startswith("BYE ")]
    assert sorted(sip_header(m, "Route") for m in sent) == sorted(
        [f"<sip:127.0.0.1:{secondary.port};lr>"] * 2 + [f"<sip:127.0.0.1:{sink.port};lr>"])
    assert "focus-bye-answered" in ender.logs()
    assert sink.logs() == [f"bye BYE {conf} route <sip:127.0.0.1:{sink.port};lr>"]
    assert [request_line(m) for m in elsewhere.messages(received=True)] == ["SIP/2.0 200 OK"]
    assert "old-bye-answered" in old.logs()


# -- plain_phone.xml -----------------------------------------------------------

def test_plain_phone_refuses_subscribe_489_and_answers_options(tmp_path):
    phone = start("plain_phone.xml", None, tmp_path, [], timeout=60)
    try:
        target = f"127.0.0.1:{phone.port}"
        conf = start("selftest/subscribe_uac.xml", target, tmp_path,
                     ["-m", "2", "-r", "10", "-set", "event", "conference"], name="conf")
        pres = start("selftest/subscribe_uac.xml", target, tmp_path,
                     ["-m", "1", "-set", "event", "presence"], name="pres")
        probe = start("options_uac.xml", target, tmp_path, ["-m", "2", "-r", "10"])
        finish(conf, pres, probe)
        assert phone.proc.poll() is None           # still serving
    finally:
        phone.kill()
    assert conf.logs() == ["refused allow-events talk"] * 2
    assert pres.logs() == ["refused allow-events talk"]
    answers = probe.messages(received=True)
    assert len(answers) == 2
    for answer in answers:
        assert request_line(answer) == "SIP/2.0 200 OK"
        assert sip_header(answer, "Allow-Events") is None
        assert "SUBSCRIBE" not in sip_header(answer, "Allow")
    assert sorted(phone.logs()) == ["options 200"] * 2 + [
        "subscribe conference 489"] * 2 + ["subscribe presence 489"]


# -- forwarded_refer.xml -------------------------------------------------------

def refer(tmp_path, answer, expect, name):
    target = start("selftest/refer_uas.xml", None, tmp_path,
                   ["-m", "1", "-set", "answer", answer], name=f"{name}-target")
    args = ["-s", "room", "-m", "1", "-key", "refer_to", "sip:carol@127.0.0.1:5099",
            "-key", "origin", "sip:focus-a@127.0.0.1:5070", "-key", "hops", "2"]
    if expect is not None:
        args += ["-set", "expect", expect]
    sender = start("forwarded_refer.xml", f"127.0.0.1:{target.port}", tmp_path, args,
                   name=name)
    return sender, target


def test_forwarded_refer_accepted_notifies_until_terminated(tmp_path):
    sender, target = refer(tmp_path, "202", "202", "accepted")
    finish(sender, target)
    assert sender.logs() == [
        "outcome 202",
        "sipfrag 100 active SIP/2.0 100 Trying",
        "sipfrag 200 terminated SIP/2.0 200 OK"]
    assert target.logs() == [
        f"refer refer-to <sip:carol@127.0.0.1:5099> referred-by "
        f"<sip:referrer@127.0.0.1:{sender.port}> marker <sip:focus-a@127.0.0.1:5070>;hops=2"]
    answers = [m for m in sender.messages(received=False) if m.startswith("SIP/2.0 ")]
    assert [request_line(m) for m in answers] == ["SIP/2.0 200 OK"] * 2
    refer_sent = sender.messages(received=False)[0]
    assert sip_header(refer_sent, "X-Mfocus-Forwarded") == "<sip:focus-a@127.0.0.1:5070>;hops=2"


@pytest.mark.parametrize("answer,expect", [("403", None), ("482", "4xx"), ("403", "403"),
                                           ("482", "any")])
def test_forwarded_refer_refused(tmp_path, answer, expect):
    sender, target = refer(tmp_path, answer, expect, "refused")
    finish(sender, target)
    assert sender.logs() == [f"outcome {answer}"]
    assert not any(m.startswith("NOTIFY ") for m in sender.messages(received=True))


def test_forwarded_refer_expect_mismatch_fails(tmp_path):
    sender, target = refer(tmp_path, "403", "202", "mismatch")
    assert sender.wait() != 0
    assert target.wait() == 0
    assert sender.logs() == ["outcome 403"]
    assert "Failed regexp match" in sender.errors()
