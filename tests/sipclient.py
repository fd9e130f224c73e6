"""A scripted SIP client for security tests: builds requests as text, sends
them over UDP (from any local port, a peer's listening port included) or
TCP, and reads what comes back.  The party under test is always a real
``twistd mfocus``; this plays the attacker or the phone that a test needs
to control byte for byte.  Loopback only.
"""

import hashlib
import re
import socket
import time
import uuid

HOST = "127.0.0.1"


def request(method, ruri, local_port, transport="UDP", headers=(), body=b"",
            call_id=None, from_uri=None, from_tag=None, to_uri=None, to_tag=None, cseq=1):
    """A request as bytes, with a fresh branch."""
    call_id = call_id or uuid.uuid4().hex
    from_uri = from_uri or f"sip:tester@{HOST}:{local_port}"
    lines = [f"{method} {ruri} SIP/2.0",
             f"Via: SIP/2.0/{transport} {HOST}:{local_port};branch=z9hG4bK{uuid.uuid4().hex}"
             ";rport",
             "Max-Forwards: 70",
             f"From: <{from_uri}>;tag={from_tag or uuid.uuid4().hex[:8]}",
             f"To: <{to_uri or ruri}>" + (f";tag={to_tag}" if to_tag else ""),
             f"Call-ID: {call_id}",
             f"CSeq: {cseq} {method}",
             f"Contact: <{from_uri}>"]
    lines += [f"{k}: {v}" for k, v in headers]
    if body:
        lines.append("Content-Type: application/sdp")
    lines.append(f"Content-Length: {len(body)}")
    return ("\r\n".join(lines) + "\r\n\r\n").encode() + body


SDP = (b"v=0\r\no=t 1 1 IN IP4 127.0.0.1\r\ns=-\r\nc=IN IP4 127.0.0.1\r\nt=0 0\r\n"
       b"m=audio 4000 RTP/AVP 0\r\na=rtpmap:0 PCMU/8000\r\n")


class UDP:
    """A UDP socket on ``port`` (0: any) that sends to a focus and collects
    everything that arrives."""

    def __init__(self, port=0, host=HOST):
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.sock.bind((host, port))
        self.port = self.sock.getsockname()[1]

    def send(self, data, port):
        self.sock.sendto(data, (HOST, port))

    def receive(self, timeout=1.0, until=None):
        """Messages received within ``timeout`` s (stop early once ``until``
        is true of one)."""
        out = []
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            self.sock.settimeout(max(0.01, deadline - time.monotonic()))
            try:
                data = self.sock.recv(65535).decode("utf-8", "replace")
            except socket.timeout:
                break
            out.append(data)
            if until is not None and until(data):
                break
        return out

    def ask(self, data, port, timeout=2.0):
        """Send ``data``; the first final response to it (its status line's
        code and the whole text), or (None, None)."""
        call_id = re.search(rb"Call-ID: (\S+)", data).group(1).decode()
        self.send(data, port)
        for message in self.receive(timeout, until=lambda m: _final(m, call_id)):
            if _final(message, call_id):
                return int(message.split(" ", 2)[1]), message
        return None, None

    def close(self):
        self.sock.close()


class TCP:
    """One TCP connection to a focus; with ``tls`` (an ``ssl.SSLContext``),
    a TLS one."""

    def __init__(self, port, tls=None, source=None):
        self.sock = socket.create_connection((HOST, port), timeout=2,
                                             source_address=(source, 0) if source else None)
        if tls is not None:
            self.sock = tls.wrap_socket(self.sock, server_hostname=HOST)
        self.port = self.sock.getsockname()[1]
        self.buffer = b""

    def ask(self, data, timeout=2.0):
        call_id = re.search(rb"Call-ID: (\S+)", data).group(1).decode()
        self.sock.sendall(data)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            self.sock.settimeout(max(0.01, deadline - time.monotonic()))
            try:
                chunk = self.sock.recv(65535)
            except socket.timeout:
                break
            if not chunk:
                break
            self.buffer += chunk
            for message in self.buffer.decode("utf-8", "replace").split("SIP/2.0 ")[1:]:
                message = "SIP/2.0 " + message
                if _final(message, call_id):
                    return int(message.split(" ", 2)[1]), message
        return None, None

    def close(self):
        self.sock.close()


def _final(message, call_id):
    return message.startswith("SIP/2.0 ") and f"Call-ID: {call_id}" in message and \
        int(message.split(" ", 2)[1]) >= 200


def ok_for(request):
    """Our 200 OK to ``request`` (its text), as bytes (§8.2.6: Via, From,
    To, Call-ID and CSeq copied)."""
    copied = "".join(f"{h}: {header(request, h)}\r\n"
                     for h in ("Via", "From", "To", "Call-ID", "CSeq"))
    return f"SIP/2.0 200 OK\r\n{copied}Content-Length: 0\r\n\r\n".encode()


def header(message, name):
    m = re.search(rf"^{name}:[ \t]*(.*)$", message, re.M | re.I)
    return m.group(1).strip() if m else None


def digest(challenge, method, uri, user, password, nc=1, cnonce="0a4f113b"):
    """An MD5 Authorization value answering ``challenge`` (RFC 2617 §3.2.2,
    qop=auth): what a phone would send."""
    params = dict(re.findall(r'(\w+)="?([^",]*)"?', challenge))
    realm, nonce = params["realm"], params["nonce"]
    h = lambda text: hashlib.md5(text.encode()).hexdigest()  # noqa: E731
    ha1, ha2 = h(f"{user}:{realm}:{password}"), h(f"{method}:{uri}")
    ncs = f"{nc:08x}"
    response = h(f"{ha1}:{nonce}:{ncs}:{cnonce}:auth:{ha2}")
    return (f'Digest username="{user}", realm="{realm}", nonce="{nonce}", uri="{uri}", '
            f'response="{response}", algorithm=MD5, qop=auth, nc={ncs}, cnonce="{cnonce}"')
