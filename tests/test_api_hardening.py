"""The API hardened (issue 15, point 5): against the browser on the API's
own machine.  A POST must say ``Content-Type: application/json`` (415:
cross-site text/plain and form posts need no preflight), an ``Origin`` other
than the API's own is 403, a ``Host`` that does not name the listener's
address is 421 (DNS rebinding); all before the token and the path, in the
order guard.py gives.  Unit tests of the guard on twisted.web's
DummyRequest, then a real ``twistd mfocus`` on loopback."""

import http.client
import json
import socket

import pytest
from twisted.internet.address import IPv4Address, IPv6Address, UNIXAddress
from twisted.logger import capturedLogs
from twisted.web.test.requesthelper import DummyRequest

from twisted_mfocus.web.api import api_root, api_site
from twisted_mfocus.web.guard import allowed_names, split_authority

from .apiviews import Views
from .harness import Focus, api_post, free_port, udp_options, wait_for

TOKEN = "0123456789abcdef-test-token"
MUTE = "/api/v1/conferences/room/members/sip%3Aalice%40host/mute"
JSON = "application/json"


def _root(token=None, names=()):
    views, left = Views(), []
    return api_root(views, lambda: left.append(True), token=token, names=names), views, left


class Answer:
    def __init__(self, request, body):
        self.code = request.responseCode or 200
        self.body = json.loads(body) if body else None
        self.header = lambda name: (request.responseHeaders.getRawHeaders(name) or [None])[0]


def _request(root, method, path, host="127.0.0.1:8080", origin=None, ctype=None,
             token=None, local=None, secure=False,
             proto=b"HTTP/1.1", headers=()):
    """Render one request through the guard; ``host`` None sends no Host."""
    request = DummyRequest(path.encode().split(b"/")[1:])
    request.client = IPv4Address("TCP", "10.0.0.7", 40000)
    request.method = method.encode()
    request.clientproto = proto
    request.getHost = lambda: local or V4
    request.isSecure = lambda: secure
    for name, value in [("host", host), ("origin", origin), ("content-type", ctype),
                        ("authorization", token and f"Bearer {token}")] + list(headers):
        if value is not None:
            request.requestHeaders.addRawHeader(name.encode(), value.encode())
    return Answer(request, root.render(request))


# -- the order of the checks ---------------------------------------------------

@pytest.mark.parametrize("token", [None, TOKEN, "wrong-token-0123456789"])
@pytest.mark.parametrize("method, path", [("POST", "/api/v1/leave"), ("POST", MUTE),
                                          ("GET", "/api/v1/conferences"), ("GET", "/nothing")])
def test_a_foreign_host_is_421_whether_or_not_it_carries_the_token(token, method, path):
    root, views, left = _root(TOKEN)
    with capturedLogs() as events:
        answer = _request(root, method, path, host="evil.example:8080", ctype=JSON, token=token)
    assert (answer.code, answer.body) == (421, {"error": "misdirected request"})
    assert answer.header(b"www-authenticate") is None        # not asked for the token
    assert views.calls == [] and left == []
    assert ["Host 'evil.example:8080' is not this API"] == [
        e["why"] for e in events if "why" in e]


@pytest.mark.parametrize("token", [None, TOKEN])
def test_a_foreign_origin_is_403_whether_or_not_it_carries_the_token(token):
    root, views, left = _root(TOKEN)
    answer = _request(root, "POST", "/api/v1/leave", origin="http://evil.example",
                      ctype=JSON, token=token)
    assert (answer.code, answer.body) == (403, {"error": "forbidden origin"})
    assert answer.header(b"www-authenticate") is None
    assert views.calls == [] and left == []


def test_the_token_comes_before_the_content_type_and_the_path():
    root, views, left = _root(TOKEN)
    for method, path in [("POST", "/api/v1/leave"), ("POST", "/nothing"), ("GET", "/x")]:
        answer = _request(root, method, path, ctype="text/plain")
        assert answer.code == 401 and answer.header(b"www-authenticate") == \
            b'Bearer realm="mfocus"'
    assert _request(root, "POST", "/api/v1/leave", ctype="text/plain", token=TOKEN).code == 415
    assert views.calls == [] and left == []
    assert _request(root, "POST", "/api/v1/leave", ctype=JSON, token=TOKEN).code == 202
    assert left == [True]


@pytest.mark.parametrize("ctype", [None, "text/plain", "application/x-www-form-urlencoded",
                                   "multipart/form-data; boundary=x", "application/jsonx",
                                   "text/plain; x=application/json", "application/json-seq",
                                   "application/merge-patch+json", ""])
@pytest.mark.parametrize("path", ["/api/v1/leave", MUTE, "/api/v1/nothing",
                                  "/api/v1/conferences"])
def test_a_post_that_is_not_json_is_415_before_its_path(ctype, path):
    root, views, left = _root()
    answer = _request(root, "POST", path, ctype=ctype)
    assert answer.code == 415
    assert answer.body == {"error": "unsupported media type: send Content-Type: application/json"}
    assert answer.header(b"accept") == b"application/json"
    assert answer.header(b"x-content-type-options") == b"nosniff"
    assert views.calls == [] and left == []


def test_two_content_types_are_415():
    root, _, left = _root()
    answer = _request(root, "POST", "/api/v1/leave", ctype=JSON,
                      headers=[("content-type", "text/plain")])
    assert answer.code == 415 and left == []


@pytest.mark.parametrize("ctype", [JSON, "application/json; charset=utf-8",
                                   "Application/JSON", " application/json ;charset=UTF-8"])
def test_a_json_post_does_what_it_did(ctype):
    root, _, left = _root()
    answer = _request(root, "POST", MUTE, ctype=ctype)
    assert (answer.code, answer.body) == (200, {"uri": "sip:alice@host", "muted": True})
    assert _request(root, "POST", "/api/v1/conferences", ctype=ctype).code == 405
    assert _request(root, "POST", "/api/v1/nothing", ctype=ctype).code == 405   # as before
    assert left == []
    assert _request(root, "POST", "/api/v1/leave", ctype=ctype).code == 202 and left == [True]


def test_reads_need_no_content_type():
    root, _, _ = _root()
    assert _request(root, "GET", "/api/v1/conferences").code == 200
    assert _request(root, "HEAD", "/api/v1/conferences").code == 200
    assert _request(root, "GET", "/api/v1/leave").code == 405
    assert _request(root, "GET", "/api/v1/conferences/nosuch").code == 404


@pytest.mark.parametrize("method, path, ctype, code", [
    ("GET", "/api/v1/conferences", None, 200), ("GET", "/api/v1/nothing", None, 404),
    ("GET", "/api/v1/leave", None, 405), ("POST", "/api/v1/leave", "text/plain", 415),
    ("POST", "/api/v1/leave", JSON, 202)])
@pytest.mark.parametrize("host, origin, refused", [
    ("127.0.0.1:8080", None, None), ("evil.example", None, 421), (None, None, 400),
    ("127.0.0.1:8080", "http://evil.example", 403)])
def test_every_response_is_json_nosniff_no_store(method, path, ctype, code, host, origin,
                                                 refused):
    root, _, _ = _root()
    answer = _request(root, method, path, host=host, origin=origin, ctype=ctype)
    assert answer.code == (refused or code)
    assert answer.header(b"content-type") == b"application/json"
    assert answer.header(b"x-content-type-options") == b"nosniff"
    assert answer.header(b"cache-control") == b"no-store"
    assert isinstance(answer.body, (dict, list))


# -- Host -----------------------------------------------------------------------

V4 = IPv4Address("TCP", "127.0.0.1", 8080)
V6 = IPv6Address("TCP", "::1", 8080)
LAN = IPv4Address("TCP", "10.0.0.5", 8080)
MAPPED = IPv6Address("TCP", "::ffff:10.0.0.5", 8080)
UNIX = UNIXAddress(b"/run/mfocus.sock")


@pytest.mark.parametrize("local, host", [
    (V4, "127.0.0.1"), (V4, "127.0.0.1:8080"), (V4, "127.0.0.1:80"), (V4, "localhost"),
    (V4, "LocalHost:8080"), (V6, "[::1]:8080"), (V6, "[::1]"), (V6, "[0:0::1]:8080"),
    (V6, "localhost:8080"), (LAN, "10.0.0.5:8080"), (MAPPED, "10.0.0.5:8080"),
    (MAPPED, "[::ffff:10.0.0.5]:8080"), (UNIX, "localhost"),
    (IPv4Address("TCP", "127.0.0.2", 8080), "127.0.0.2:8080"),
])
def test_the_listeners_own_address_is_answered(local, host):
    root, _, _ = _root()
    assert _request(root, "GET", "/api/v1/conferences", host=host, local=local).code == 200


@pytest.mark.parametrize("local, host", [
    (V4, "evil.example"), (V4, "evil.example:8080"), (V4, "[::1]:8080"),
    (V4, "127.0.0.2:8080"), (V4, "localhost.:8080"), (V4, "mfocus.example"),
    (V6, "127.0.0.1:8080"), (LAN, "localhost:8080"), (LAN, "127.0.0.1:8080"),
    (UNIX, "127.0.0.1"), (UNIX, "evil.example"),
    (V4, "127.1"), (V4, "2130706433"), (V4, "0x7f.1"),   # no other spelling of 127.0.0.1
])
def test_any_other_host_is_421(local, host):
    root, views, _ = _root()
    answer = _request(root, "GET", "/api/v1/conferences", host=host, local=local)
    assert (answer.code, answer.body) == (421, {"error": "misdirected request"})
    assert views.calls == []


@pytest.mark.parametrize("host", ["127.0.0.1:99999", "127.0.0.1:0", "127.0.0.1:x",
                                  "127.0.0.1:8080:1", "::1", "[::1", "[::1]x", "[evil]",
                                  "a b", "", "user@127.0.0.1", "\u00e9.example"])
def test_a_host_that_is_not_one_is_400(host):
    root, views, _ = _root()
    answer = _request(root, "GET", "/api/v1/conferences", host=host)
    assert (answer.code, answer.body) == (400, {"error": "bad Host header"})
    assert views.calls == []


def test_a_missing_or_repeated_host_is_refused():
    root, views, left = _root()
    assert _request(root, "GET", "/api/v1/conferences", host=None).code == 400   # HTTP/1.1
    assert _request(root, "GET", "/api/v1/conferences", host=None, proto=b"HTTP/1.0").code == 421
    assert _request(root, "POST", "/api/v1/leave", host="127.0.0.1", ctype=JSON,
                    headers=[("host", "127.0.0.1")]).code == 400
    assert views.calls == [] and left == []


def test_extra_names_are_answered_too():
    root, _, _ = _root(names=("MFocus.Example", "[fd00::5]", "10.9.9.9"))
    for host in ("mfocus.example", "mfocus.example:8443", "[fd00::5]:1", "10.9.9.9",
                 "127.0.0.1", "localhost"):
        assert _request(root, "GET", "/api/v1/conferences", host=host).code == 200, host
    assert _request(root, "GET", "/api/v1/conferences", host="other.example").code == 421
    assert allowed_names(["::1", "Name"]) == {split_authority(b"[::1]")[0], "name"}
    for bad in ("a b", "", "x:80", b"bytes"):
        with pytest.raises(ValueError):
            allowed_names([bad])


def test_api_site_checks_everything():
    site = api_site(Views(), lambda: None, names=["mfocus.example"])
    assert site.resource.names == {"mfocus.example"}
    assert _request(site.resource, "GET", "/api/v1/conferences", host="evil.example").code == 421
    assert api_site(Views()).resource.names == frozenset()


# -- Origin ----------------------------------------------------------------------

@pytest.mark.parametrize("host, origin, secure", [
    ("127.0.0.1:8080", "http://127.0.0.1:8080", False),
    ("127.0.0.1", "http://127.0.0.1", False),
    ("127.0.0.1", "http://127.0.0.1:80", False),
    ("127.0.0.1:80", "HTTP://127.0.0.1", False),
    ("localhost:8080", "http://LOCALHOST:8080", False),
    ("[::1]:8080", "http://[::1]:8080", False),
    ("127.0.0.1:8443", "https://127.0.0.1:8443", True),
    ("127.0.0.1", "https://127.0.0.1:443", True),
])
def test_the_apis_own_origin_is_answered(host, origin, secure):
    local = V6 if "::1" in host else V4
    root, _, left = _root()
    assert _request(root, "POST", "/api/v1/leave", host=host, origin=origin, ctype=JSON,
                    secure=secure, local=local).code == 202
    assert left == [True]


@pytest.mark.parametrize("host, origin, secure", [
    ("127.0.0.1:8080", "http://evil.example", False),
    ("127.0.0.1:8080", "http://evil.example:8080", False),
    ("127.0.0.1:8080", "null", False),
    ("127.0.0.1:8080", "", False),
    ("127.0.0.1:8080", "http://127.0.0.1:8081", False),       # another local service
    ("127.0.0.1:8080", "http://127.0.0.1", False),
    ("127.0.0.1:8080", "https://127.0.0.1:8080", False),      # scheme: the listener's
    ("127.0.0.1:8443", "http://127.0.0.1:8443", True),
    ("127.0.0.1:8080", "http://localhost:8080", False),       # same address, other origin
    ("127.0.0.1:8080", "http://127.0.0.1:8080/", False),      # an origin has no path
    ("127.0.0.1:8080", "http://x@127.0.0.1:8080", False),
    ("127.0.0.1:8080", "file://", False),
    ("127.0.0.1:8080", "ftp://127.0.0.1:8080", False),
])
def test_any_other_origin_is_403(host, origin, secure):
    root, views, left = _root()
    for method, path in [("POST", "/api/v1/leave"), ("POST", MUTE), ("GET", "/api/v1/conferences")]:
        answer = _request(root, method, path, host=host, origin=origin, ctype=JSON,
                          secure=secure)
        assert (answer.code, answer.body) == (403, {"error": "forbidden origin"})
    assert views.calls == [] and left == []


def test_two_origins_are_403():
    root, _, left = _root()
    answer = _request(root, "POST", "/api/v1/leave", origin="http://127.0.0.1:8080", ctype=JSON,
                      headers=[("origin", "http://127.0.0.1:8080")])
    assert answer.code == 403 and left == []


def test_refusals_are_logged_with_their_code_bounded():
    root, _, _ = _root()
    with capturedLogs() as events:
        for _ in range(5):
            _request(root, "POST", "/api/v1/leave", ctype="text/plain")
    lines = [e for e in events if "why" in e]
    assert len(lines) == 1
    assert (lines[0]["code"], lines[0]["why"], lines[0]["client"]) == (
        415, "Content-Type 'text/plain'", "10.0.0.7")


# -- a real process ---------------------------------------------------------------

def _http(port, method, path, headers=None, host=None):
    """(status, headers, JSON body) over http.client: ``host`` replaces the
    Host header (http.client sends 127.0.0.1:port otherwise)."""
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=5)
    try:
        conn.putrequest(method, path, skip_host=host is not None, skip_accept_encoding=True)
        if host is not None:
            conn.putheader("Host", host)
        body = b"" if method == "POST" else None
        for name, value in (headers or {}).items():
            conn.putheader(name, value)
        if body is not None:
            conn.putheader("Content-Length", "0")
        conn.endheaders()
        r = conn.getresponse()
        return r.status, r.headers, json.loads(r.read() or b"null")
    finally:
        conn.close()


def _http10_without_host(port, path):
    """The status of an HTTP/1.0 GET with no Host header."""
    with socket.create_connection(("127.0.0.1", port), timeout=5) as s:
        s.sendall(f"GET {path} HTTP/1.0\r\n\r\n".encode())
        data = b""
        while chunk := s.recv(65536):
            data += chunk
    return int(data.split(b" ", 2)[1])


def test_a_focus_refuses_cross_site_requests_and_leaves_on_a_proper_post(tmp_path):
    port, http_port = free_port(), free_port()
    (tmp_path / "mfocus.conf").write_text("")
    focus = Focus(["--config", str(tmp_path / "mfocus.conf"),
                   "--listen", f"udp:127.0.0.1:{port}", "--rtp-ports", "32900-32999",
                   "--http", f"tcp:{http_port}:interface=127.0.0.1"], tmp_path)
    leave = "/api/v1/leave"
    json_type = {"Content-Type": JSON}
    try:
        focus.wait_ready(port)
        assert wait_for(lambda: _http(http_port, "GET", "/api/v1/conferences")[0] == 200)

        def still_running():
            return focus.alive() and udp_options(port) == 200

        # Cross-site posts a browser sends without a preflight: 415, nothing happens.
        for ctype in ("text/plain", "application/x-www-form-urlencoded", None):
            status, headers, body = _http(http_port, "POST", leave,
                                          {"Content-Type": ctype} if ctype else {})
            assert (status, body["error"]) == (
                415, "unsupported media type: send Content-Type: application/json")
            assert headers["Content-Type"] == JSON
            assert headers["X-Content-Type-Options"] == "nosniff"
            assert headers["Cache-Control"] == "no-store"
        assert still_running()
        # A page of another origin: 403, even for a JSON post.
        status, headers, body = _http(http_port, "POST", leave,
                                      dict(json_type, Origin="http://evil.example"))
        assert (status, body) == (403, {"error": "forbidden origin"})
        assert headers["Cache-Control"] == "no-store"
        assert still_running()
        # DNS rebinding: a Host naming another server, with the port or not.
        for host in ("evil.example", f"evil.example:{http_port}"):
            status, headers, body = _http(http_port, "GET", "/api/v1/conferences", host=host)
            assert (status, body) == (421, {"error": "misdirected request"})
            assert headers["X-Content-Type-Options"] == "nosniff"
        assert _http(http_port, "POST", leave, json_type, host="evil.example")[0] == 421
        assert _http10_without_host(http_port, "/api/v1/conferences") == 421
        assert still_running()
        # Its own names: answered.
        for host in (f"127.0.0.1:{http_port}", "127.0.0.1", f"localhost:{http_port}"):
            status, headers, body = _http(http_port, "GET", "/api/v1/conferences", host=host)
            assert (status, body) == (200, [])
            assert headers["Cache-Control"] == "no-store"
        # A JSON post with no Origin, or its own: the usual path (no such conference).
        status, _, body = _http(http_port, "POST", MUTE, json_type)
        assert (status, body) == (404, {"error": "no such conference"})
        own = dict(json_type, Origin=f"http://127.0.0.1:{http_port}")
        assert _http(http_port, "POST", MUTE, own)[0] == 404
        assert api_post(http_port, MUTE)[0] == 404          # the harness sends JSON
        assert still_running()
        log = focus.log()
        assert "API: refused POST from 127.0.0.1: Content-Type 'text/plain' (415;" in log
        for code in (" 415 ", " 403 ", " 421 "):      # refusals: not in the access log
            assert f'HTTP/1.1"{code}' not in log
        assert '"GET /api/v1/conferences HTTP/1.1" 200' in log
        # Then a proper leave: 202, and the process exits cleanly.
        status, _, body = _http(http_port, "POST", leave,
                                {"Content-Type": JSON + "; charset=utf-8"})
        assert (status, body) == (202, {"leaving": True})
        assert focus.proc.wait(timeout=30) == 0
    finally:
        focus.stop()
