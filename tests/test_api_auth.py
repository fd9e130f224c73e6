"""The API locked (issue 14, point 6): with ``[http] token_file`` every
request needs ``Authorization: Bearer TOKEN``; without one the API listens
on loopback only.  Unit tests of the bind rule, the token file and the
guard resource, then real ``twistd mfocus`` processes on loopback."""

import json
import socket
import urllib.error
import urllib.request

import pytest
from twisted.internet.address import IPv4Address
from twisted.logger import capturedLogs
from twisted.python import usage
from twisted.web.test.requesthelper import DummyRequest

from twisted_mfocus.config import ConfigError
from twisted_mfocus.tap import Options
from twisted_mfocus.web.api import api_root, read_token
from twisted_mfocus.web.listen import api_endpoint, parse_description

from .apiviews import Views
from .harness import Focus, api_get, api_post, free_port, udp_options, wait_for

TOKEN = "0123456789abcdef-test-token"


# -- where the API may listen -------------------------------------------------

@pytest.mark.parametrize("description, bound", [
    ("tcp:8080", "tcp:8080:interface=127.0.0.1"),
    ("tcp:8080:interface=127.0.0.1", "tcp:8080:interface=127.0.0.1"),
    ("tcp:8080:interface=127.0.0.2", "tcp:8080:interface=127.0.0.2"),
    ("tcp:8080:backlog=5", "tcp:8080:backlog=5:interface=127.0.0.1"),
    ("tcp:8080:127.0.0.1:50", "tcp:8080:127.0.0.1:50"),    # port, interface, backlog
    (r"tcp:8080:interface=\:\:1", r"tcp:8080:interface=\:\:1"),
    (r"tcp6:8080:interface=\:\:1", r"tcp6:8080:interface=\:\:1"),
    ("tcp6:8080", r"tcp6:8080:interface=\:\:1"),
    ("ssl:8443:privateKey=k.pem", "ssl:8443:privateKey=k.pem:interface=127.0.0.1"),
    ("unix:/path", "unix:/path"),
    ("unix:/run/mfocus.sock:mode=600", "unix:/run/mfocus.sock:mode=600"),
])
def test_without_a_token_the_api_binds_loopback(description, bound):
    assert api_endpoint(description, None) == bound


@pytest.mark.parametrize("description, shown", [
    ("tcp:8080:interface=0.0.0.0", "binds 0.0.0.0"),
    ("tcp:8080:interface=10.1.2.3", "binds 10.1.2.3"),
    (r"tcp6:8080:interface=\:\:", "binds ::"),
    (r"tcp:8080:interface=\:\:", "binds ::"),
    ("tcp:8080:interface=", "binds every address"),
    ("tcp:8080:", "binds every address"),              # an empty positional interface
    ("tcp:8080:0.0.0.0", "binds 0.0.0.0"),             # the positional interface
    ("tcp:8080:interface=localhost", "binds localhost"),   # names, not addresses
    ("tcp:8080:interface=127.0.0.1:interface=0.0.0.0", "binds 0.0.0.0"),   # the last wins
    ("ssl:8443:privateKey=k.pem:interface=0.0.0.0", "binds 0.0.0.0"),
    ("systemd:domain=INET:index=0", "where a systemd: endpoint listens"),
    ("tcp:8080\\", "not an endpoint description"),
])
def test_without_a_token_any_other_address_is_refused(description, shown):
    with pytest.raises(ConfigError) as e:
        api_endpoint(description, None)
    assert shown in str(e.value)
    assert f"--http {description}" in str(e.value)
    assert "without [http] token_file the API listens on loopback only" in str(e.value) or \
        "not an endpoint description" in str(e.value)


@pytest.mark.parametrize("description", [
    "tcp:8080", "tcp:8080:interface=0.0.0.0", r"tcp6:8080:interface=\:\:",
    r"tcp6:8080:interface=\:\:1", "tcp:8080:interface=127.0.0.1", "unix:/path"])
def test_with_a_token_the_description_is_used_as_it_is(description):
    assert api_endpoint(description, TOKEN) == description


@pytest.mark.parametrize("description", [
    "tcp:8080", r"tcp6:8080:interface=\:\:1", "a=b=c:d\\:e:f=", "tcp:8080:",
    "ssl:1:privateKey=x\\=y:interface=\\:\\:", "unix:/a\\:b:mode=600"])
def test_descriptions_split_as_twisted_splits_them(description):
    from twisted.internet import endpoints
    assert parse_description(description) == endpoints._parse(description)


def test_usage_error_names_the_address(tmp_path):
    with pytest.raises(usage.UsageError, match="binds 0.0.0.0"):
        Options().parseOptions(["--http", "tcp:8080:interface=0.0.0.0"])
    opts = Options()
    opts.parseOptions(["--http", "tcp:8080"])
    assert opts["http_endpoint"] == "tcp:8080:interface=127.0.0.1"
    assert opts["http_token"] is None
    conf = _token_config(tmp_path, TOKEN + "\n")
    opts = Options()
    opts.parseOptions(["--config", str(conf), "--http", "tcp:8080:interface=0.0.0.0"])
    assert (opts["http_endpoint"], opts["http_token"]) == ("tcp:8080:interface=0.0.0.0", TOKEN)


# -- the token file ------------------------------------------------------------

def _token_config(tmp_path, token_text):
    token = tmp_path / "api.token"
    token.write_text(token_text)
    conf = tmp_path / "mfocus.conf"
    conf.write_text(f"[http]\ntoken_file = {token}\n")
    return conf


def test_the_token_is_the_file_stripped(tmp_path):
    path = tmp_path / "t"
    path.write_text(f"  {TOKEN}\n\n")
    assert read_token(str(path)) == TOKEN


@pytest.mark.parametrize("content, why", [
    ("", "holds no token"),
    (" \n\t\n", "holds no token"),
    ("0123456789abcdef 0123456789abcdef\n", "contains whitespace"),
    ("0123456789abcdef\n0123456789abcdef\n", "contains whitespace"),
    ("0123456789abcde\n", "shorter than 16"),
    ("0123456789abcdef\u00e9\n", "visible ASCII"),
])
def test_a_bad_token_is_refused_at_start(tmp_path, content, why):
    conf = _token_config(tmp_path, content)
    with pytest.raises(usage.UsageError, match="http.token_file") as e:
        Options().parseOptions(["--config", str(conf), "--http", "tcp:8080"])
    assert why in str(e.value)


def test_a_missing_or_unreadable_token_file_is_refused_at_start(tmp_path):
    for path in (tmp_path / "nosuch", tmp_path):        # a directory cannot be read
        conf = tmp_path / "mfocus.conf"
        conf.write_text(f"[http]\ntoken_file = {path}\n")
        with pytest.raises(usage.UsageError, match=r"http\.token_file: cannot read"):
            Options().parseOptions(["--config", str(conf)])


# -- the guard, on twisted.web's DummyRequest -------------------------------

class Clock:
    def __init__(self):
        self.t = 100.0

    def __call__(self):
        return self.t


def _site(token=TOKEN):
    views, left, clock = Views(), [], Clock()
    return api_root(views, lambda: left.append(True), token=token, now=clock), views, left, clock


def _request(root, method, path, authorization=None, client="10.0.0.7"):
    request = DummyRequest(path.encode().split(b"/")[1:])
    request.client = IPv4Address("TCP", client, 40000)
    request.method = method.encode()
    if authorization is not None:
        request.requestHeaders.setRawHeaders(b"authorization", [authorization.encode()])
    body = root.render(request)        # the guard is the site's leaf root
    header = request.responseHeaders.getRawHeaders
    return (request.responseCode or 200, json.loads(body) if body else None,
            (header(b"www-authenticate") or [None])[0],
            (header(b"x-content-type-options") or [None])[0])


MUTE = "/api/v1/conferences/room/members/sip%3Aalice%40host/mute"
PATHS = [("GET", "/api/v1/conferences"), ("GET", "/api/v1/conferences/room"),
         ("HEAD", "/api/v1/conferences"), ("POST", "/api/v1/leave"), ("POST", MUTE),
         ("GET", "/api/v1/nothing"), ("POST", "/"), ("GET", "/api/v1/leave"),
         ("GET", "/page.js/more"),         # GET / itself: the page, test_page.py
         ("PUT", "/api/v1/conferences"), ("POST", "/nothing")]


@pytest.mark.parametrize("method, path", PATHS)
@pytest.mark.parametrize("authorization, challenge", [
    (None, b'Bearer realm="mfocus"'),
    ("Bearer wrong-token-0123456789", b'Bearer realm="mfocus", error="invalid_token"'),
    ("Bearer " + TOKEN[:-1], b'Bearer realm="mfocus", error="invalid_token"'),
    ("Bearer", b'Bearer realm="mfocus", error="invalid_token"'),
    ("Basic " + TOKEN, b'Bearer realm="mfocus"'),
    (TOKEN, b'Bearer realm="mfocus"'),
])
def test_without_the_token_every_request_is_401_and_does_nothing(
        method, path, authorization, challenge):
    root, views, left, _ = _site()
    with capturedLogs() as events:
        status, body, www, nosniff = _request(root, method, path, authorization)
    assert status == 401                  # before 404 and 405: no path is disclosed
    assert www == challenge
    assert nosniff == b"nosniff"
    assert body == {"error": "unauthorized"} or method == "HEAD"
    assert views.calls == [] and left == []
    assert [e for e in events if "10.0.0.7" in str(e.get("client"))]


def test_with_the_token_the_api_answers():
    root, views, left, _ = _site()
    auth = "Bearer " + TOKEN
    assert _request(root, "GET", "/api/v1/conferences", auth) == (200, [], None, b"nosniff")
    assert _request(root, "GET", "/api/v1/conferences/room", auth)[:2] == (200, {"name": "room"})
    assert _request(root, "GET", "/api/v1/nothing", auth)[0] == 404
    assert _request(root, "GET", "/api/v1/leave", auth)[0] == 405
    assert _request(root, "POST", MUTE, "bearer  " + TOKEN)[:2] == (
        200, {"uri": "sip:alice@host", "muted": True})
    assert left == []
    assert _request(root, "POST", "/api/v1/leave", auth)[:2] == (202, {"leaving": True})
    assert left == [True]
    assert views.calls == ["summaries", ("conference", "room"),
                           ("set_muted", "room", "sip:alice@host", True)]


def test_two_authorization_headers_are_refused():
    root, _, left, _ = _site()
    request = DummyRequest([b"api", b"v1", b"leave"])
    request.method = b"POST"
    request.requestHeaders.setRawHeaders(b"authorization", [b"Bearer " + TOKEN.encode()] * 2)
    root.render(request)
    assert request.responseCode == 401 and left == []


def test_without_a_token_file_the_api_is_open_and_says_nosniff():
    root, _, left, _ = _site(token=None)
    assert _request(root, "GET", "/api/v1/conferences") == (200, [], None, b"nosniff")
    assert _request(root, "GET", "/api/v1/nothing")[::3] == (404, b"nosniff")
    assert _request(root, "POST", "/api/v1/leave")[0] == 202 and left == [True]


def _refusal_lines(root, clock, t, clients):
    clock.t = t
    with capturedLogs() as events:
        for client in clients:
            assert _request(root, "GET", "/api/v1/conferences", client=client)[0] == 401
    return [e["client"] for e in events if "client" in e]


def test_refusals_are_logged_once_per_address_per_10_seconds():
    root, _, _, clock = _site()
    assert _refusal_lines(root, clock, 100.0, ["10.0.0.1"] * 5 + ["10.0.0.2"]) == [
        "10.0.0.1", "10.0.0.2"]
    assert _refusal_lines(root, clock, 105.0, ["10.0.0.1", "10.0.0.2"]) == []
    assert _refusal_lines(root, clock, 110.5, ["10.0.0.1"] * 3) == ["10.0.0.1"]


def test_the_refusal_log_is_bounded():
    root, _, _, clock = _site()
    many = [f"10.1.{i // 250}.{i % 250}" for i in range(1000)]
    lines = _refusal_lines(root, clock, 100.0, many)
    assert len(lines) == 257 and lines[-1] == "other addresses"
    assert len(root.refusals.last) == 257
    assert _refusal_lines(root, clock, 101.0, many) == []
    assert len(_refusal_lines(root, clock, 111.0, many[:10])) == 10
    assert len(root.refusals.last) == 10              # the old entries went


# -- real processes -----------------------------------------------------------------

def _http(port, path, method="GET", token=None, host="127.0.0.1"):
    """(status, headers, JSON body) of one request."""
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    request = urllib.request.Request(f"http://{host}:{port}{path}", method=method,
                                     data=b"" if method == "POST" else None, headers=headers)
    try:
        with urllib.request.urlopen(request, timeout=5) as r:
            return r.status, r.headers, json.loads(r.read())
    except urllib.error.HTTPError as e:
        return e.code, e.headers, json.loads(e.read() or b"null")


def _start(tmp_path, http_args, config_text=""):
    port = free_port()
    conf = tmp_path / "mfocus.conf"
    conf.write_text(config_text)
    focus = Focus(["--config", str(conf), "--listen", f"udp:127.0.0.1:{port}",
                   "--rtp-ports", "32800-32899"] + http_args, tmp_path)
    return focus, port


def test_a_focus_with_a_token_asks_every_request_for_it(tmp_path):
    token = tmp_path / "api.token"
    token.write_text(TOKEN + "\n")
    http = free_port()
    focus, port = _start(tmp_path, ["--http", f"tcp:{http}:interface=127.0.0.1"],
                         f"[http]\ntoken_file = {token}\n")
    try:
        focus.wait_ready(port)
        assert wait_for(lambda: _http(http, "/api/v1/conferences", token=TOKEN)[0] == 200)
        status, headers, body = _http(http, "/api/v1/conferences")
        assert (status, body) == (401, {"error": "unauthorized"})
        assert headers["WWW-Authenticate"] == 'Bearer realm="mfocus"'
        assert headers["X-Content-Type-Options"] == "nosniff"
        assert _http(http, "/api/v1/conferences", token="x" * 20)[0] == 401
        assert _http(http, "/api/v1/nothing")[0] == 401
        status, headers, body = _http(http, "/api/v1/conferences", token=TOKEN)
        assert (status, body) == (200, [])
        assert headers["X-Content-Type-Options"] == "nosniff"
        assert api_get(http, "/api/v1/nothing", token=TOKEN)[0] == 404
        assert api_post(http, "/api/v1/leave")[0] == 401
        assert api_post(http, "/api/v1/leave", token="y" * 20)[0] == 401
        assert udp_options(port) == 200 and focus.alive()
        refused = [line for line in focus.log().splitlines() if "API: refused" in line]
        assert len(refused) == 1 and "from 127.0.0.1" in refused[0]    # one per 10 s
        assert '" 401 ' not in focus.log()          # not in the access log either
        assert '"GET /api/v1/conferences HTTP/1.1" 200' in focus.log()
        assert api_post(http, "/api/v1/leave", token=TOKEN)[0] == 202
        assert focus.proc.wait(timeout=30) == 0
    finally:
        focus.stop()


def test_without_a_token_an_open_interface_is_refused_at_start(tmp_path):
    http = free_port()
    focus, _ = _start(tmp_path, ["--http", f"tcp:{http}:interface=0.0.0.0"])
    code = focus.proc.wait(timeout=30)
    focus.stop()
    assert code != 0
    assert (f"--http tcp:{http}:interface=0.0.0.0 binds 0.0.0.0; without [http] token_file "
            "the API listens on loopback only") in focus.log()


def _listening(port):
    """The local addresses (hex, as /proc/net/tcp{,6} shows them) of the
    sockets listening on TCP ``port``."""
    out = []
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        with open(table) as f:
            for line in list(f)[1:]:
                local, state = line.split()[1], line.split()[3]
                address, _, hexport = local.partition(":")
                if state == "0A" and int(hexport, 16) == port:
                    out.append(address)
    return out


def test_without_a_token_a_bare_tcp_port_binds_loopback(tmp_path):
    http = free_port()
    focus, port = _start(tmp_path, ["--http", f"tcp:{http}"])
    try:
        focus.wait_ready(port)
        assert wait_for(lambda: _http(http, "/api/v1/conferences")[0] == 200)
        status, headers, body = _http(http, "/api/v1/conferences")
        assert (status, body) == (200, [])
        assert headers["X-Content-Type-Options"] == "nosniff"
        assert "WWW-Authenticate" not in headers
        assert _listening(http) == ["0100007F"]       # 127.0.0.1, not 0.0.0.0
        with socket.socket() as s, pytest.raises(ConnectionRefusedError):
            s.connect(("127.0.0.2", http))            # another loopback address: nobody there
    finally:
        focus.stop()
