"""A phone behind a NAT, for real (issue 16, [nat] flows): its Via,
Contact and SDP name 10.99.99.99 (a private address nothing reaches), but
its packets come from 127.0.0.1.  In a network namespace with only ``lo``,
so nothing can leave: it hears the conference (RTP latched onto where its
media comes from) and gets the focus's BYE at shutdown on its real flow."""

import re
import socket
import threading
import time

import numpy as np

from twisted_mfocus.media import g711
from twisted_mfocus.media.packet import build_rtp, parse_rtp

from . import sipclient
from .foci import Node, stop_all
from .netns import private_netns
from .peers import dial_all, tone_phone
from .peers.process import need
from .tones import band_levels

PRIVATE = "10.99.99.99"


def _natted(data):
    """A request as the phone writes it: its own private address."""
    text = data.decode()
    text = re.sub(r"Via: SIP/2.0/UDP 127\.0\.0\.1:\d+", f"Via: SIP/2.0/UDP {PRIVATE}:5060", text)
    text = re.sub(r"Contact: <sip:nat@127\.0\.0\.1:\d+>", f"Contact: <sip:nat@{PRIVATE}:5060>",
                  text)
    head, _, body = text.partition("\r\n\r\n")
    body = body.replace("IN IP4 127.0.0.1", f"IN IP4 {PRIVATE}")
    head = re.sub(r"Content-Length: \d+", f"Content-Length: {len(body)}", head)
    return (head + "\r\n\r\n" + body).encode()


@private_netns
def test_a_phone_behind_a_nat_hears_and_gets_bye_on_its_flow(tmp_path):
    need("baresip")
    node = Node("focus", "primary", 5, tmp_path).start()
    alice = tone_phone(tmp_path, "alice", 440.0)
    phone, media = sipclient.UDP(), socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    media.bind(("127.0.0.1", 0))
    stop = threading.Event()
    heard = []
    try:
        dial_all([alice], f"sip:room@127.0.0.1:{node.port}")
        ruri = f"sip:room@127.0.0.1:{node.port}"
        invite = _natted(sipclient.request("INVITE", ruri, phone.port, body=sipclient.SDP,
                                           call_id="nat-1", from_tag="n1",
                                           from_uri=f"sip:nat@127.0.0.1:{phone.port}"))
        status, ok = phone.ask(invite, node.port)
        assert status == 200, ok
        to_tag = re.search(r"^To:.*;tag=([^;\s]+)", ok, re.M).group(1)
        focus_rtp = int(re.search(r"^m=audio (\d+)", ok, re.M).group(1))
        phone.send(_natted(sipclient.request("ACK", ruri, phone.port, call_id="nat-1",
                                             from_tag="n1", to_tag=to_tag,
                                             from_uri=f"sip:nat@127.0.0.1:{phone.port}")),
                   node.port)

        def talk():                             # 1000 Hz from the NATed media socket
            t = np.arange(160)
            for seq in range(250):
                if stop.is_set():
                    return
                tone = (8000 * np.sin(2 * np.pi * 1000 * (t + seq * 160) / 8000)).astype(np.int16)
                media.sendto(build_rtp(0, seq, seq * 160, 0x4e41,
                                       bytes(g711.encode("PCMU", tone))),
                             ("127.0.0.1", focus_rtp))
                time.sleep(0.02)

        def listen():
            media.settimeout(0.2)
            while not stop.is_set():
                try:
                    heard.append(parse_rtp(media.recv(2048)))
                except (socket.timeout, OSError):
                    continue
        threads = [threading.Thread(target=talk), threading.Thread(target=listen)]
        for t in threads:
            t.start()
        time.sleep(4)
        stop.set()
        for t in threads:
            t.join(5)
        frames = sorted((p.timestamp, g711.decode(g711.CODECS[p.payload_type], p.payload))
                        for p in heard if p.payload_type in g711.CODECS)
        view = node.conference("room")
        assert len(frames) >= 100, (len(frames), [m.get("rtp") for m in view["members"]])
        audio = np.concatenate([f for _, f in frames])
        levels = band_levels(audio[-8000 * 2:], [440, 1000])
        assert levels[440] > 0.2 and levels[1000] < 0.01, levels   # alice, not itself
        # SIGTERM: the focus ends the call with BYE, on the phone's real flow.
        node.process.terminate()
        byes = phone.receive(10.0, until=lambda m: m.startswith("BYE "))
        bye = next((m for m in byes if m.startswith("BYE ")), None)
        assert bye is not None, byes
        assert "Call-ID: nat-1" in bye
        phone.send(sipclient.ok_for(bye), node.port)
    finally:
        stop.set()
        alice.stop()
        phone.close()
        media.close()
        stop_all([node])


@private_netns
def test_a_phone_behind_a_nat_is_handed_over_on_its_flow(tmp_path):
    """The primary is full (capacity 1, alice on it): the NATed phone is
    accepted beyond capacity and handed to the secondary, whose INVITE with
    Replaces (RFC 3891) reaches the phone at the address its packets come
    from, not at the private Contact."""
    need("baresip")
    from .foci import start_foci
    primary, secondary = start_foci(tmp_path, [("primary", "primary", 1),
                                               ("s1", "secondary", 2)])
    alice = tone_phone(tmp_path, "alice", 440.0)
    phone = sipclient.UDP()
    try:
        dial_all([alice], f"sip:room@127.0.0.1:{primary.port}")
        ruri = f"sip:room@127.0.0.1:{primary.port}"
        status, ok = phone.ask(_natted(sipclient.request(
            "INVITE", ruri, phone.port, body=sipclient.SDP, call_id="nat-2", from_tag="n2",
            from_uri=f"sip:nat@127.0.0.1:{phone.port}")), primary.port)
        assert status == 200, ok
        to_tag = re.search(r"^To:.*;tag=([^;\s]+)", ok, re.M).group(1)
        phone.send(_natted(sipclient.request("ACK", ruri, phone.port, call_id="nat-2",
                                             from_tag="n2", to_tag=to_tag,
                                             from_uri=f"sip:nat@127.0.0.1:{phone.port}")),
                   primary.port)
        got = phone.receive(15.0, until=lambda m: m.startswith("INVITE ")
                            and "Replaces:" in m)
        invite = next((m for m in got if m.startswith("INVITE ") and "Replaces:" in m), None)
        assert invite is not None, got
        assert sipclient.header(invite, "Replaces").startswith("nat-2;"), invite
        assert invite.startswith(f"INVITE sip:nat@127.0.0.1:{phone.port}"), invite
        assert f":{secondary.port}" in sipclient.header(invite, "Via"), invite
    finally:
        alice.stop()
        phone.close()
        stop_all([primary, secondary])
