"""Messages parsed (+ serialized) per second: mfocus vs twisted.protocols.sip.

Inputs: the valid RFC 4475/5118 torture messages and a typical INVITE
with SDP.  Twisted's ``MessagesParser`` is fed each message as one
datagram (``dataReceived`` + ``dataDone``), messages collected through its
callback; inputs it cannot parse as exactly one message are listed and
left out of *both* sides of the comparison.  Each side runs in rounds,
alternating, and the median round counts (machines here are noisy).

    python bench/parse_bench.py [--rounds 7] [--repeat 200]
"""

import argparse
import os
import statistics
import sys
import time
import warnings

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.dirname(HERE))

warnings.simplefilter("ignore")
from twisted.protocols import sip as tsip  # noqa: E402

from tests.conftest import SHARED  # noqa: E402
from twisted_mfocus.sip.message import parse_datagram  # noqa: E402

VALID_4475 = ["wsinv", "intmeth", "esc01", "escnull", "lwsdisp", "longreq", "dblreq",
              "transports", "mpart01", "unreason", "baddate", "badbranch", "unkscm",
              "bext01", "invut", "zeromf", "inv2543"]

TYPICAL_INVITE = (
    "INVITE sip:conf1@127.0.0.1:5060 SIP/2.0\r\n"
    "Via: SIP/2.0/UDP 127.0.0.1:5071;branch=z9hG4bK-524287-1---ab12cd34ef;rport\r\n"
    "Max-Forwards: 70\r\n"
    "Contact: <sip:alice@127.0.0.1:5071;transport=udp>\r\n"
    "To: <sip:conf1@127.0.0.1:5060>\r\n"
    "From: \"Alice\" <sip:alice@127.0.0.1:5071>;tag=9fxced76sl\r\n"
    "Call-ID: 3848276298220188511@127.0.0.1\r\n"
    "CSeq: 1 INVITE\r\n"
    "Allow: INVITE, ACK, CANCEL, OPTIONS, BYE, REFER, NOTIFY, SUBSCRIBE, INFO\r\n"
    "Supported: replaces, norefersub\r\n"
    "User-Agent: baresip v1.0.0 (x86_64/linux)\r\n"
    "Content-Type: application/sdp\r\n"
    "Content-Length: {n}\r\n\r\n{sdp}")
SDP = ("v=0\r\no=- 3724614466 3724614466 IN IP4 127.0.0.1\r\ns=-\r\nc=IN IP4 127.0.0.1\r\n"
       "t=0 0\r\nm=audio 10010 RTP/AVP 0 8 101\r\na=rtpmap:0 PCMU/8000\r\n"
       "a=rtpmap:8 PCMA/8000\r\na=rtpmap:101 telephone-event/8000\r\na=fmtp:101 0-15\r\n"
       "a=sendrecv\r\na=ptime:20\r\n")


def inputs():
    out = {"typical INVITE": TYPICAL_INVITE.format(n=len(SDP), sdp=SDP).encode()}
    for name in VALID_4475:
        out[name] = (SHARED / "sip-torture" / "rfc4475" / f"{name}.dat").read_bytes()
    for p in sorted((SHARED / "sip-torture" / "rfc5118").glob("*.dat")):
        if p.stem != "ipv6-bad":
            out[p.stem] = p.read_bytes()
    return out


def twisted_parse(data):
    got = []
    parser = tsip.MessagesParser(got.append)
    parser.dataReceived(data)
    parser.dataDone()
    return got


def twisted_usable(data):
    try:
        got = twisted_parse(data)
    except Exception as e:
        return f"raises {type(e).__name__}"
    if len(got) != 1:
        return f"{len(got)} messages"
    try:
        got[0].toString()
    except Exception as e:
        return f"toString raises {type(e).__name__}"
    return None


def ours_round(datas, repeat, validate):
    t0 = time.perf_counter()
    for _ in range(repeat):
        for d in datas:
            m = parse_datagram(d)
            if validate:
                m.validate()
            m.to_bytes()
    return len(datas) * repeat / (time.perf_counter() - t0)


def twisted_round(datas, repeat):
    t0 = time.perf_counter()
    for _ in range(repeat):
        for d in datas:
            for m in twisted_parse(d):
                m.toString()
    return len(datas) * repeat / (time.perf_counter() - t0)


def twisted_parse_round(datas, repeat):
    t0 = time.perf_counter()
    for _ in range(repeat):
        for d in datas:
            twisted_parse(d)
    return len(datas) * repeat / (time.perf_counter() - t0)


def compare(label, datas, rounds, repeat):
    """Medians of alternating rounds; (ours with validate / Twisted
    parse-only, ours without / Twisted parse+toString)."""
    ours, ours_v, theirs, parse_only = [], [], [], []
    for _ in range(rounds):
        ours.append(ours_round(datas, repeat, False))
        theirs.append(twisted_round(datas, repeat))
        ours_v.append(ours_round(datas, repeat, True))
        parse_only.append(twisted_parse_round(datas, repeat))
    o, ov, t, tp = (statistics.median(x) for x in (ours, ours_v, theirs, parse_only))
    print(f"{label}:\n  mfocus parse+serialize          {o:10.0f} msg/s  ratio {o / t:5.2f}x"
          f" (to Twisted's parse+toString)"
          f"\n  mfocus parse+validate+serialize {ov:10.0f} msg/s  ratio {ov / tp:5.2f}x"
          f" (to Twisted's parse only)"
          f"\n  twisted MessagesParser+toString {t:10.0f} msg/s"
          f"\n  twisted MessagesParser only     {tp:10.0f} msg/s")
    return ov / tp


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--rounds", type=int, default=7)
    ap.add_argument("--repeat", type=int, default=200)
    args = ap.parse_args()
    msgs = inputs()
    usable, skipped = {}, {}
    for name, data in msgs.items():
        why = twisted_usable(data)
        (skipped if why else usable)[name] = why or data
    print(f"{len(usable)} of {len(msgs)} inputs usable by twisted.protocols.sip; left out of "
          f"both sides: " + ", ".join(f"{k} ({v})" for k, v in skipped.items()))
    compare("valid torture set (common inputs)",
            [d for k, d in usable.items() if k != "typical INVITE"], args.rounds, args.repeat)
    ratio = compare("typical INVITE with SDP", [msgs["typical INVITE"]], args.rounds,
                    args.repeat * 20)
    print(f"\ngoal (issue 18): typical INVITE parse+validate+serialize >= 2x Twisted's "
          f"parse-only: {ratio:.2f}x ({'met' if ratio >= 2 else 'MISSED'})")


if __name__ == "__main__":
    main()
