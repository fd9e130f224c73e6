"""Black-box: every torture message against a real ``twistd mfocus``.

Inside a private network namespace (only ``lo``), each message of
RFC 4475 and RFC 5118 goes over the transport its top Via names, from a
socket bound to the Via's port on loopback (so a response routed by
``received``/``rport`` per RFC 3261 §18.2.2 lands there); the reply must be
what the corpus's INDEX.md describes for an endpoint that is not a
registrar.  After every message the daemon must still answer OPTIONS.
"""

import re
import socket
import ssl
import time

from .certs import make_ca_and_leaf
from .harness import Focus, free_port, udp_options
from .netns import private_netns

# What the daemon must answer, per INDEX.md; None: no response at all.
# Valid requests reach the focus: OPTIONS 200; an INVITE joins the
# conference its Request-URI names (200), unless it carries a To tag of a
# dialog we do not have (wsinv: 481), offers no G.711 (ipv6-in-sdp,
# ipv4-mapped-ipv6 offer only G.726: 488); inv2543 (RFC 2543 syntax, no
# Contact) is accepted for backward compatibility, its From the remote target;
# REGISTER 405 (known, not supported), BYE 481 (no dialog), an unknown
# method 501; MESSAGE carries only the foci's moderation requests (relay.py):
# mpart01's multipart body is 415 with Accept (RFC 3261 §8.2.3).
EXPECTED_4475 = {
    "wsinv": 481, "intmeth": 501, "esc01": 200, "escnull": 405,
    "lwsdisp": 200, "longreq": 200, "dblreq": 405, "transports": 200,
    "mpart01": 415, "unreason": None,
    "badinv01": 400, "clerr": 400, "ncl": 400, "scalar02": 400,
    "quotbal": 400, "ltgtruri": 400, "lwsruri": 400, "escruri": 400,
    "baddate": 200, "badaspec": 400, "badvers": 505, "mismatch01": 400,
    "bigcode": None, "badbranch": 200, "insuf": 400, "unkscm": 416,
    "bext01": 420, "invut": 415, "multi01": 400, "mcl01": 400,
    "zeromf": 200, "inv2543": 200,
}
EXPECTED_5118 = {
    "ipv6-good": 405, "ipv6-bad": 400, "port-ambiguous": 405,
    "port-unambiguous": 405, "via-received-param-with-delim": 481,
    "via-received-param-no-delim": 200, "ipv6-in-sdp": 488,
    "mult-ip-in-header": 481, "mult-ip-in-sdp": 200, "ipv4-mapped-ipv6": 488,
    "ipv6-bug-abnf-3-colons": 200, "ipv6-correct-abnf-2-colons": 200,
}
# Headers the INDEX requires on some answers.
REQUIRED_HEADER = {"bext01": b"unsupported:", "invut": b"accept:",
                   "mpart01": b"accept:", "intmeth": b"allow:"}

_VIA = re.compile(rb"^(?:via|v)[ \t]*:[ \t]*SIP[ \t]*/[ \t]*[0-9.]+[ \t]*/[ \t]*"
                  rb"([A-Za-z]+)[ \t]+(\[[^\]]*\]|[^;:, \t\r]+)(?::(\d+))?",
                  re.IGNORECASE | re.MULTILINE)
_CALL_ID = re.compile(rb"^(?:call-id|i)[ \t]*:[ \t]*(\S+)", re.IGNORECASE | re.MULTILINE)
_CSEQ = re.compile(rb"^cseq[ \t]*:[ \t]*(\d+)", re.IGNORECASE | re.MULTILINE)


def _top_via(data):
    head = data.split(b"\r\n\r\n", 1)[0]
    head = re.sub(rb"\r\n[ \t]+", b" ", head)      # undo line folding
    m = _VIA.search(head)
    transport = m.group(1).decode().upper()
    port = int(m.group(3)) if m.group(3) else (5061 if transport == "TLS" else 5060)
    return transport, port


def _responses(chunks, call_id):
    """Status codes of the responses in ``chunks`` that carry ``call_id``."""
    codes = []
    for chunk in chunks:
        for msg in re.split(rb"(?=SIP/2\.0 \d{3} )", chunk):
            if msg.startswith(b"SIP/2.0 ") and (call_id is None or call_id in msg):
                codes.append((int(msg[8:11]), msg))
    return codes


def _exchange(data, transport, via_port, family, host, ports, tls_ctx, wait):
    """Send ``data``; collect what comes back until a final response or ``wait``."""
    head = data.split(b"\r\n\r\n", 1)[0]
    cid = _CALL_ID.search(head) or _CSEQ.search(head)   # insuf has no Call-ID
    call_id = cid.group(1) if cid else None
    chunks = []
    deadline = time.monotonic() + wait
    if transport == "UDP":
        s = socket.socket(family, socket.SOCK_DGRAM)
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        s.bind((host, via_port))
        s.sendto(data, (host, ports["UDP"]))
    else:
        raw = socket.create_connection((host, ports[transport]), timeout=wait)
        s = tls_ctx.wrap_socket(raw) if transport == "TLS" else raw
        s.sendall(data)
    try:
        while time.monotonic() < deadline:
            s.settimeout(max(0.01, deadline - time.monotonic()))
            try:
                chunk = s.recv(65535)
            except (socket.timeout, ssl.SSLError):
                break
            if not chunk:
                break
            chunks.append(chunk)
            if any(code >= 200 for code, _ in _responses(chunks, call_id)):
                break
    finally:
        s.close()
    return [r for r in _responses(chunks, call_id) if r[0] >= 200]


@private_netns
def test_every_torture_message_gets_the_indexed_answer(shared_dir, tmp_path):
    certs = make_ca_and_leaf(tmp_path)
    port = free_port()
    tls_port = free_port()
    conf = tmp_path / "mfocus.conf"
    conf.write_text(f"[tls]\ncertificate = {certs['cert']}\nkey = {certs['key']}\n")
    focus = Focus(["--config", str(conf),
                   "--listen", f"udp:127.0.0.1:{port}", "--listen", f"tcp:127.0.0.1:{port}",
                   "--listen", f"tls:127.0.0.1:{tls_port}",
                   "--listen", f"udp:[::1]:{port}", "--listen", f"tcp:[::1]:{port}"],
                  tmp_path)
    tls_ctx = ssl.create_default_context(cafile=certs["ca"])
    tls_ctx.check_hostname = False
    ports = {"UDP": port, "TCP": port, "TLS": tls_port}
    failures = []
    try:
        focus.wait_ready(port)
        for corpus, expected, family, host in (
                ("rfc4475", EXPECTED_4475, socket.AF_INET, "127.0.0.1"),
                ("rfc5118", EXPECTED_5118, socket.AF_INET6, "::1")):
            files = sorted((shared_dir / "sip-torture" / corpus).glob("*.dat"))
            assert {f.stem for f in files} == set(expected), "corpus and table differ"
            for path in files:
                name = path.stem
                data = path.read_bytes()
                transport, via_port = _top_via(data)
                assert via_port not in (port, tls_port), f"{name}: Via port clashes"
                want = expected[name]
                got = _exchange(data, transport, via_port, family, host, ports, tls_ctx,
                                wait=3.0 if want else 0.7)
                codes = [c for c, _ in got]
                if want is None:
                    if codes:
                        failures.append(f"{name}: expected no answer, got {codes}")
                elif codes[:1] != [want]:
                    failures.append(f"{name} over {transport}: expected {want}, got {codes}")
                elif name in REQUIRED_HEADER and REQUIRED_HEADER[name] not in got[0][1].lower():
                    failures.append(f"{name}: {want} lacks {REQUIRED_HEADER[name]!r}")
                if udp_options(port) != 200:
                    failures.append(f"after {name}: the daemon no longer answers OPTIONS")
                    if not focus.alive():
                        break
    finally:
        focus.stop()
    assert not failures, "\n".join(failures) + "\n--- daemon log ---\n" + focus.log()[-6000:]
