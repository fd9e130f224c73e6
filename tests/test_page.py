"""The live page (issue 20 item 2): ``GET /`` on the ``--http`` listener.

First the files and the guard's rule for them, and the mixer's ``level``
behind the speaking indicator (unit tests); then headless Chromium driven
by selenium against real ``twistd mfocus`` processes: three foci and seven
SIPp members drawn where they are held, followed through a kill -9 without
a reload; and a focus with an API token, whose page asks for it and kicks
a member (SIPp gets the BYE).  Screenshots are kept as artefacts.
"""

import json
import os
import re
import shutil
import signal

import numpy as np
import pytest
from twisted.internet.address import IPv4Address
from twisted.web.test.requesthelper import DummyRequest

from twisted_mfocus.media.mixer import LEVEL_HALF_LIFE, Mixer
from twisted_mfocus.web.api import api_root
from twisted_mfocus.web.page import STATIC

from .apiviews import Views
from .focusrig import Phone, join, make_rig
from .harness import SILENT_MEMBERS, Focus, Sipp, api_get, free_port, wait_for

TOKEN = "0123456789abcdef-page-token"
V4 = IPv4Address("TCP", "127.0.0.1", 8080)
#: where the screenshots are copied for people to look at (printed too)
ARTEFACTS = os.environ.get("MFOCUS_ARTEFACTS", "/tmp/mfocus-artefacts")


# -- the files and the guard ------------------------------------------------------

def _get(root, path, method="GET", host="127.0.0.1:8080", token=None):
    request = DummyRequest(path.encode().split(b"/")[1:])
    request.client = IPv4Address("TCP", "10.0.0.7", 40000)
    request.method = method.encode()
    request.getHost = lambda: V4
    request.isSecure = lambda: False
    request.requestHeaders.addRawHeader(b"host", host.encode())
    if token:
        request.requestHeaders.addRawHeader(b"authorization", f"Bearer {token}".encode())
    body = root.render(request)
    headers = {k.decode().lower(): v[0].decode()
               for k, v in request.responseHeaders.getAllRawHeaders()}
    return request.responseCode or 200, headers, body


@pytest.mark.parametrize("path, kind", [("/", "text/html"), ("/page.js", "text/javascript"),
                                        ("/page.css", "text/css")])
@pytest.mark.parametrize("token", [None, TOKEN])
def test_the_page_is_served_without_the_token_with_a_strict_policy(path, kind, token):
    root = api_root(Views(), token=token, names=())
    status, headers, body = _get(root, path)
    assert status == 200 and headers["content-type"].startswith(kind)
    csp = headers["content-security-policy"]
    assert "default-src 'self'" in csp and "frame-ancestors 'none'" in csp
    assert "unsafe-inline" not in csp and "unsafe-eval" not in csp
    assert headers["x-content-type-options"] == "nosniff"
    assert body and int(headers["content-length"]) == len(body)
    assert _get(root, path, "HEAD")[::2] == (200, b"")


def test_with_a_token_only_the_page_is_public():
    views = Views()
    root = api_root(views, token=TOKEN, names=())
    for method, path in [("GET", "/api/v1/conferences"), ("POST", "/"), ("GET", "/page.js/x"),
                         ("GET", "/index.html"), ("PUT", "/page.css")]:
        status, headers, body = _get(root, path, method)
        assert status == 401, (method, path)
        assert json.loads(body) == {"error": "unauthorized"}
    assert views.calls == []
    assert _get(root, "/api/v1/conferences", token=TOKEN)[0] == 200
    # The Host check (DNS rebinding) holds for the page too.
    assert _get(root, "/", host="evil.example:8080")[0] == 421


def test_the_files_load_nothing_from_elsewhere_and_run_nothing_inline():
    with open(os.path.join(STATIC, "index.html")) as f:
        html = f.read()
    scripts = re.findall(r"<script([^>]*)>(.*?)</script>", html, re.S)
    assert scripts and all('src="' in attrs and not body.strip() for attrs, body in scripts)
    assert not re.search(r"\son\w+=|style=|javascript:", html)
    for name in os.listdir(STATIC):
        with open(os.path.join(STATIC, name)) as f:
            text = f.read()
        # no CDN, no fonts: the only absolute URL is the SVG namespace name
        assert set(re.findall(r"https?://[^\s\"')]+", text)) <= {"http://www.w3.org/2000/svg"}
        assert "@import" not in text and "@font-face" not in text and "eval(" not in text


# -- the level behind the speaking indicator ----------------------------------------

def test_level_holds_the_measured_peak_and_fades():
    mixer = Mixer(capacity=2, frame=320)
    for key in ("a", "b", "m"):
        mixer.add(key)
    mixer.set("m", muted=True)
    loud = np.full(320, 16384, dtype=np.int16)
    for key in ("a", "m"):
        mixer.put(key, loud)
    mixer.mix()
    assert mixer.level("a") == 0.5 and mixer.level("b") == 0.0
    assert mixer.level("m") == 0.0                 # muted: not measured
    assert mixer.level("nobody") is None
    for _ in range(LEVEL_HALF_LIFE):                # nothing from a: it fades
        mixer.put("b", np.full(320, 100, dtype=np.int16))
        mixer.mix()
    assert mixer.level("a") == 0.25
    assert 0 < mixer.level("b") < 0.01


def test_the_member_view_has_its_level_here():
    rig = make_rig()
    join(rig, Phone(5081))
    (member,) = rig.focus.views.conference("room")["members"]
    assert member["level"] == 0.0


# -- real processes, headless Chromium ----------------------------------------------

CHROMIUM, CHROMEDRIVER = "/usr/bin/chromium", "/usr/bin/chromedriver"
FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
         "--disable-background-networking", "--disable-component-update", "--disable-sync",
         "--window-size=1400,1000"]


@pytest.fixture
def browser(tmp_path):
    """A headless Chromium (Debian's) under chromedriver, a fresh profile."""
    if not (os.path.exists(CHROMIUM) and os.path.exists(CHROMEDRIVER)):
        # Never a skip: a page test that did not run proves nothing (peers.process.need).
        pytest.fail("chromium and chromium-driver are not installed (scripts/test installs them)")
    webdriver = pytest.importorskip("selenium.webdriver")
    from selenium.webdriver.chrome.service import Service
    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for flag in FLAGS + [f"--user-data-dir={tmp_path / 'chromium-profile'}"]:
        options.add_argument(flag)
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    service = Service(CHROMEDRIVER, log_output=str(tmp_path / "chromedriver.log"))
    driver = webdriver.Chrome(service=service, options=options)
    driver.set_page_load_timeout(30)
    try:
        yield driver
    finally:
        driver.quit()


def _screenshot(driver, tmp_path, capsys, name):
    """Saved under tmp_path and copied to ARTEFACTS, whose path is printed."""
    path = tmp_path / f"{name}.png"
    assert driver.save_screenshot(str(path))
    os.makedirs(ARTEFACTS, exist_ok=True)
    kept = os.path.join(ARTEFACTS, f"{name}.png")
    shutil.copyfile(path, kept)
    with capsys.disabled():
        print(f"\n  screenshot: {kept}")


def _no_policy_violations(driver):
    """Nothing the page did was refused by its Content-Security-Policy."""
    logs = driver.get_log("browser")
    assert not [e for e in logs if "Content Security Policy" in e.get("message", "")], logs


#: {focus URI: sorted member endpoints} as the page draws conference NAME
DRAWN = """
const section = document.querySelector(`section[data-conference="${arguments[0]}"]`);
if (!section) return null;
const out = {};
for (const col of section.querySelectorAll(".focus[data-focus]")) {
  out[col.dataset.focus] = [...col.querySelectorAll(".member[data-endpoint]")]
    .map((m) => m.dataset.endpoint).sort();
}
return out;
"""


def _expected(view):
    """What the page must draw of an API view: each focus, its members."""
    if view is None:
        return None
    out = {f["uri"]: [] for f in view["foci"]}
    for m in view["members"]:
        out.setdefault(m["focus"], []).append(m["endpoint"])
    return {uri: sorted(endpoints) for uri, endpoints in out.items()}


def _drawn_as_api(driver, node, name):
    """The page draws what ``node``'s API shows now (else None)."""
    expected = _expected(node.conference(name))
    return expected if expected and driver.execute_script(DRAWN, name) == expected else None


CONF = "conf1"


def _rehomed(view, n, gone):
    """All ``n`` members connected, once each, none at (and no focus) ``gone``."""
    members, foci = view
    users = [m[0] for m in members]
    return (len(users) == n == len(set(users)) and all(m[3] == "connected" for m in members)
            and not any(m[2] == gone for m in members) and all(f[0] != gone for f in foci))


def test_the_page_draws_three_foci_and_follows_a_kill_9(tmp_path, capsys, browser):
    from .foci import start_foci, stop_all, wait_agreement
    from .peers.process import need

    need("sipp")
    n = 7
    nodes = start_foci(tmp_path, [("primary", "primary", 3), ("s1", "secondary", 3),
                                  ("s2", "secondary", 3)], SILENT_MEMBERS)
    primary, s1, s2 = nodes
    uas = Sipp("member_handover.xml", None, tmp_path, ["-set", "hold_ms", "150000"], timeout=200)
    uac = Sipp("member_dialin.xml", f"127.0.0.1:{primary.port}", tmp_path,
               ["-s", CONF, "-m", str(n), "-l", str(n), "-r", "3", "-set", "hold_ms", "150000",
                "-set", "contact_port", str(uas.port)], timeout=200)
    try:
        view, _ = wait_agreement(nodes, CONF, lambda v: len(v[0]) == n and len(v[1]) == 3 and
                                 all(m[3] == "connected" for m in v[0]) and
                                 all(f[3] <= f[2] for f in v[1]), timeout=60)
        assert view is not None, [node.conference(CONF) for node in nodes]
        held = {f[0]: f[3] for f in view[1]}
        assert all(held.values()), held             # every focus holds someone
        browser.get(f"http://127.0.0.1:{primary.http}/")
        drawn = wait_for(lambda: _drawn_as_api(browser, primary, CONF), timeout=30)
        assert drawn, (browser.execute_script(DRAWN, CONF), primary.conference(CONF))
        assert set(drawn) == {primary.uri, s1.uri, s2.uri}
        assert sum(len(e) for e in drawn.values()) == n
        assert browser.execute_script(
            "return document.querySelectorAll('.topology circle[data-node]').length") == 3
        _screenshot(browser, tmp_path, capsys, "page-three-foci")
        os.kill(s1.process.proc.pid, signal.SIGKILL)
        after, _ = wait_agreement([primary, s2], CONF, lambda v: _rehomed(v, n, s1.uri),
                                  timeout=60)
        assert after is not None, [node.conference(CONF) for node in (primary, s2)]
        # No reload: the page's polling follows the re-homed members.
        drawn = wait_for(lambda: (lambda d: d if d and s1.uri not in d else None)(
            _drawn_as_api(browser, primary, CONF)), timeout=30)
        assert drawn, (browser.execute_script(DRAWN, CONF), primary.conference(CONF))
        assert set(drawn) == {primary.uri, s2.uri}
        assert sum(len(e) for e in drawn.values()) == n
        _screenshot(browser, tmp_path, capsys, "page-after-kill-9")
        _no_policy_violations(browser)
    finally:
        stop_all(nodes, uac, uas)


@pytest.fixture
def locked_focus(tmp_path):
    """One focus whose API asks for TOKEN."""
    token = tmp_path / "api.token"
    token.write_text(TOKEN + "\n")
    port, http = free_port(), free_port()
    low = free_port(count=40, even=True)
    config = tmp_path / "mfocus.conf"
    config.write_text(f"[http]\ntoken_file = {token}\n[room:room]\n" + SILENT_MEMBERS)
    focus = Focus(["--config", str(config), "--listen", f"udp:127.0.0.1:{port}",
                   "--http", f"tcp:{http}:interface=127.0.0.1",
                   "--rtp-ports", f"{low}-{low + 39}"], tmp_path)
    try:
        focus.wait_ready(port)
    except BaseException:
        focus.stop()
        raise
    focus.port, focus.http = port, http
    yield focus
    focus.stop()


def _members(focus):
    status, body = api_get(focus.http, "/api/v1/conferences/room", token=TOKEN)
    return {m["uri"] for m in body["members"]} if status == 200 else set()


def test_with_a_token_the_page_asks_for_it_and_kicks_a_member(tmp_path, capsys, browser,
                                                               locked_focus):
    from selenium.webdriver.common.by import By
    from .peers.process import need

    need("sipp")
    focus = locked_focus
    sipp = Sipp("member.xml", f"127.0.0.1:{focus.port}", tmp_path,
                ["-s", "room", "-m", "3", "-l", "3", "-r", "20", "-set", "wait_bye", "1"],
                timeout=60)
    one, two, three = (f"sip:member{i}@127.0.0.1:{sipp.port}" for i in (1, 2, 3))
    try:
        assert wait_for(lambda: _members(focus) == {one, two, three}, timeout=15), _members(focus)
        browser.get(f"http://127.0.0.1:{focus.http}/")
        form = browser.find_element(By.ID, "token-form")
        assert wait_for(lambda: form.is_displayed(), timeout=15)     # the API said 401
        assert "401" in browser.find_element(By.ID, "status").text
        assert "401" in browser.find_element(By.ID, "auth-message").text
        assert not browser.find_elements(By.CSS_SELECTOR, ".member")   # nothing without it
        # A wrong token is refused, and said so.
        browser.find_element(By.ID, "token-input").send_keys("wrong-token-0123456789")
        browser.find_element(By.ID, "token-submit").click()
        assert wait_for(lambda: form.is_displayed() and "refused" in
                        browser.find_element(By.ID, "auth-message").text, timeout=15)
        browser.find_element(By.ID, "token-input").send_keys(TOKEN)
        browser.find_element(By.ID, "token-submit").click()
        chip = f'.member[data-member="{two}"]'
        assert wait_for(lambda: len(browser.find_elements(By.CSS_SELECTOR, ".member")) == 3,
                        timeout=15)
        assert not form.is_displayed()
        assert browser.execute_script(f"return document.querySelector('{chip}').dataset.level")
        _screenshot(browser, tmp_path, capsys, "page-with-token")
        browser.find_element(By.CSS_SELECTOR, f'{chip} button[data-action="kick"]').click()
        assert wait_for(lambda: _members(focus) == {one, three}, timeout=15), _members(focus)
        byes = lambda: sorted(m.split()[1].split(";")[0]    # noqa: E731
                              for m in sipp.messages(received=True) if m.startswith("BYE "))
        assert wait_for(lambda: byes() == [two], timeout=15), byes()
        assert wait_for(lambda: not browser.find_elements(By.CSS_SELECTOR, chip), timeout=15)
        assert len(browser.find_elements(By.CSS_SELECTOR, ".member")) == 2
        assert browser.execute_script(
            "return sessionStorage.getItem('mfocus.token')") == TOKEN
        _no_policy_violations(browser)
    finally:
        sipp.kill()
