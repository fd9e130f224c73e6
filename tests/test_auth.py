"""SIP digest authentication (RFC 3261 §22, RFC 7616, RFC 8760), server side."""

import hashlib
import re

import pytest
from hypothesis import HealthCheck, assume, given, settings, strategies as st
from twisted.internet import task

from twisted_mfocus.sip.auth import (AuthError, DigestAuthenticator, FailureLimiter, Outcome,
                                     ha1, header_names, load_users, parse_auth_params,
                                     parse_credentials)

REALM = "focus.example.com"
URI = "sip:conf1@focus.example.com"


def users(realm=REALM):
    return {
        "alice": {"MD5": ha1("alice", realm, "wonderland", "MD5"),
                  "SHA-256": ha1("alice", realm, "wonderland", "SHA-256")},
        "bob": {"MD5": ha1("bob", realm, "builder", "MD5")},       # no SHA-256 HA1
    }


def make_auth(clock=None, **kw):
    clock = clock or task.Clock()
    kw.setdefault("secret", b"k" * 32)
    return DigestAuthenticator(kw.pop("credentials", users()), REALM, clock, **kw)


# -- a test client, independent of the module's parser --------------------------

def challenge_params(value):
    assert value.startswith("Digest ")
    return {k: q if q is not None and v == "" else v
            for k, q, v in re.findall(r'(\w+)=(?:"([^"]*)"|([^,\s]+))', value)}


def pick(challenges, algorithm):
    return next(c for c in challenges if challenge_params(c)["algorithm"] == algorithm)


def client_parts(challenge, user, password, method, uri, nc=1, cnonce="0a4f113b", qop="auth"):
    """The (name, text) auth-params a UAC would send (RFC 7616 §3.4)."""
    c = challenge_params(challenge)
    alg = c["algorithm"]
    h = lambda s: hashlib.new("sha256" if alg == "SHA-256" else "md5",  # noqa: E731
                              s.encode()).hexdigest()
    a1 = h(f"{user}:{c['realm']}:{password}")
    a2 = h(f"{method}:{uri}")
    ncs = f"{nc:08x}"
    if qop:
        resp = h(f"{a1}:{c['nonce']}:{ncs}:{cnonce}:{qop}:{a2}")
    else:
        resp = h(f"{a1}:{c['nonce']}:{a2}")
    parts = [("username", f'"{user}"'), ("realm", f'"{c["realm"]}"'),
             ("nonce", f'"{c["nonce"]}"'), ("uri", f'"{uri}"'), ("response", f'"{resp}"'),
             ("algorithm", alg)]
    if qop:
        parts += [("qop", qop), ("nc", ncs), ("cnonce", f'"{cnonce}"')]
    if "opaque" in c:
        parts.append(("opaque", f'"{c["opaque"]}"'))
    return parts


def join(parts):
    return "Digest " + ", ".join(f"{k}={v}" for k, v in parts)


def authorize(challenges, algorithm="SHA-256", user="alice", password="wonderland",
              method="INVITE", uri=URI, **kw):
    return join(client_parts(pick(challenges, algorithm), user, password, method, uri, **kw))


# -- known answers ---------------------------------------------------------------

def test_md5_known_answer_rfc2617():
    """RFC 2617 §3.5 example, through the whole check path."""
    realm = "testrealm@host.com"
    creds = {"Mufasa": {"MD5": ha1("Mufasa", realm, "Circle Of Life", "MD5")}}
    assert creds["Mufasa"]["MD5"] == "939e7578ed9e3c518a452acee763bce9"
    auth = DigestAuthenticator(creds, realm, task.Clock(), algorithms=("MD5",),
                               opaque="5ccc069c403ebaf9f0171e9517f40e41")
    auth._nonce_time = lambda nonce: 0     # the RFC's nonce is not one of ours
    value = ('Digest username="Mufasa",\r\n  realm="testrealm@host.com",\r\n'
             '  nonce="dcd98b7102dd2f0e8b11d0f600bfb0c093",\r\n  uri="/dir/index.html",\r\n'
             '  qop=auth,\r\n  nc=00000001,\r\n  cnonce="0a4f113b",\r\n'
             '  response="6629fae49393a05397450978507c4ef1",\r\n'
             '  opaque="5ccc069c403ebaf9f0171e9517f40e41"')
    assert auth.check("GET", value, "/dir/index.html") == (Outcome.OK, "Mufasa", None)
    assert auth.check("POST", value, "/dir/index.html").reason == "credentials"


def test_sha256_known_answer_rfc7616():
    """RFC 7616 §3.9.1 example."""
    realm = "http-auth@example.org"
    creds = {"Mufasa": {"SHA-256": ha1("Mufasa", realm, "Circle of Life", "SHA-256")}}
    auth = DigestAuthenticator(creds, realm, task.Clock(),
                               opaque="FQhe/qaU925kfnzjCev0ciny7QMkPqMAFRtzCUYo5tdS")
    auth._nonce_time = lambda nonce: 0
    value = ('Digest username="Mufasa", realm="http-auth@example.org", uri="/dir/index.html",'
             ' algorithm=SHA-256, nonce="7ypf/xlj9XXwfDPEoM4URrv/xwf94BcCAzFZH4GiTo0v",'
             ' nc=00000001, cnonce="f2/wE4q74E6zIJEtWaHKaf5wv/H5QzzpXusqGemxURZJ", qop=auth,'
             ' response="753927fa0e85d155564e2e272a28d1802ca10daf4496794697cf8db5856cb6c1",'
             ' opaque="FQhe/qaU925kfnzjCev0ciny7QMkPqMAFRtzCUYo5tdS"')
    assert auth.check("GET", value, "/dir/index.html").username == "Mufasa"
    assert auth.check("GET", value, "/dir/other.html").reason == "uri"


# -- challenges ------------------------------------------------------------------

def test_challenge_offers_sha256_then_md5():
    auth = make_auth(opaque="xyz")
    values = auth.challenge()
    assert [challenge_params(v)["algorithm"] for v in values] == ["SHA-256", "MD5"]
    for v in values:
        p = challenge_params(v)
        assert p["realm"] == REALM and p["qop"] == "auth" and p["opaque"] == "xyz"
        assert "stale" not in p and len(p["nonce"]) == 43
    assert all(challenge_params(v)["stale"] == "true" for v in auth.challenge(stale=True))
    assert "opaque" not in make_auth().challenge()[0]
    assert challenge_params(auth.challenge()[0])["nonce"] != challenge_params(values[0])["nonce"]


def test_header_names():
    assert header_names(401) == ("WWW-Authenticate", "Authorization")
    assert header_names(407) == ("Proxy-Authenticate", "Proxy-Authorization")
    with pytest.raises(ValueError):
        header_names(403)
    names = [n for n, _ in make_auth().challenge_headers(407, stale=True)]
    assert names == ["Proxy-Authenticate"] * 2


# -- verification ----------------------------------------------------------------

@pytest.mark.parametrize("algorithm", ["SHA-256", "MD5"])
def test_accepted_once_per_nc(algorithm):
    auth = make_auth()
    ch = auth.challenge()
    first = authorize(ch, algorithm, nc=1)
    assert auth.check("INVITE", first, URI) == (Outcome.OK, "alice", None)
    assert auth.check("INVITE", first, URI) == (Outcome.REFUSED, None, "replay")
    assert auth.check("BYE", authorize(ch, algorithm, method="BYE", nc=2), URI).ok
    assert auth.check("INVITE", authorize(ch, algorithm, nc=2), URI).reason == "replay"
    assert auth.check("INVITE", authorize(ch, algorithm, nc=7), URI).ok
    assert auth.check("INVITE", authorize(ch, algorithm, nc=5), URI).reason == "replay"


def test_expired_nonce_is_stale_only_with_a_good_digest():
    clock = task.Clock()
    auth = make_auth(clock)
    ch = auth.challenge()
    clock.advance(300)
    assert auth.check("INVITE", authorize(ch), URI).ok
    clock.advance(1)
    assert auth.check("INVITE", authorize(ch, nc=2), URI).outcome is Outcome.STALE
    assert auth.check("INVITE", authorize(ch, nc=3, password="x"), URI).reason == "credentials"
    assert "stale=true" in auth.challenge(stale=True)[0]


def test_forged_and_garbled_nonces_refused():
    auth = make_auth()
    other = make_auth(secret=b"x" * 32)
    assert auth.check("INVITE", authorize(other.challenge()), URI).reason == "nonce"
    nonce = challenge_params(auth.challenge()[0])["nonce"]
    for bad in ("", "abc", nonce[:-1], nonce + "A", nonce[:10] + "*" + nonce[11:]):
        ch = [re.sub(r'nonce="[^"]*"', f'nonce="{bad}"', c) for c in auth.challenge()]
        assert auth.check("INVITE", authorize(ch), URI).outcome is Outcome.REFUSED


def test_nonce_bound_to_realm_and_opaque():
    ch = make_auth(opaque="one").challenge()
    assert make_auth(opaque="one").check("INVITE", authorize(ch), URI).ok
    two = make_auth(opaque="two")
    value = authorize(ch).replace('opaque="one"', 'opaque="two"')
    assert two.check("INVITE", value, URI).reason in ("nonce", "credentials")
    assert two.check("INVITE", authorize(ch), URI).reason == "opaque"


def test_wrong_password_and_unknown_user_look_the_same():
    auth = make_auth()
    ch = auth.challenge()
    wrong = auth.check("INVITE", authorize(ch, password="nope"), URI)
    unknown = auth.check("INVITE", authorize(ch, user="mallory", nc=2), URI)
    no_sha = auth.check("INVITE", authorize(ch, user="bob", password="builder", nc=3), URI)
    assert wrong == unknown == no_sha == (Outcome.REFUSED, None, "credentials")
    assert auth.check("INVITE", authorize(ch, "MD5", user="bob", password="builder"), URI).ok


def test_uri_and_algorithm_and_realm():
    auth = make_auth()
    ch = auth.challenge()
    assert auth.check("INVITE", authorize(ch), "sip:other@focus.example.com").reason == "uri"
    assert auth.check("INVITE", authorize(ch, nc=2)).ok          # uri not checked
    md5_only = make_auth(algorithms=("MD5",))
    assert md5_only.check("INVITE", authorize(ch, nc=3), URI).reason == "algorithm"
    sess = authorize(ch, nc=4).replace("algorithm=SHA-256", "algorithm=SHA-256-sess")
    assert auth.check("INVITE", sess, URI).reason == "algorithm"
    elsewhere = authorize(ch, nc=5).replace(f'realm="{REALM}"', 'realm="other"')
    assert auth.check("INVITE", elsewhere, URI).reason == "realm"


def test_no_qop_only_when_allowed():
    ch = make_auth().challenge()
    strict = make_auth()
    assert strict.check("INVITE", authorize(ch, qop=None), URI).reason == "qop required"
    lax = make_auth(allow_no_qop=True)
    assert lax.check("INVITE", authorize(ch, "MD5", qop=None), URI).ok
    assert lax.check("INVITE", authorize(ch, "MD5", qop=None), URI).outcome is Outcome.STALE
    assert lax.check("INVITE", authorize(ch, qop="auth-int"), URI).reason == "qop"


def test_missing_and_several_values():
    auth = make_auth()
    for nothing in (None, "", []):
        assert auth.check("INVITE", nothing, URI).outcome is Outcome.MISSING
    theirs = 'Digest username="x", realm="far", nonce="n", uri="u", response="r"'
    ch = auth.challenge()
    assert auth.check("INVITE", [theirs, "garbage", authorize(ch)], URI).ok
    assert auth.check("INVITE", [theirs], URI).reason == "realm"
    assert auth.check("INVITE", "Basic YWxhZGRpbjpvcGVuc2VzYW1l", URI).reason == "not Digest"


def test_replay_table_is_bounded_and_evicted_nonces_are_stale():
    clock = task.Clock()
    auth = make_auth(clock, max_nonces=3)
    chs = []
    for _ in range(5):
        clock.advance(1)
        chs.append(auth.challenge())
    for ch in chs:
        assert auth.check("INVITE", authorize(ch), URI).ok
    assert len(auth._seen) == 3
    # The two oldest were evicted: their nonces cannot be replayed, only renewed.
    assert auth.check("INVITE", authorize(chs[0], nc=2), URI).outcome is Outcome.STALE
    assert auth.check("INVITE", authorize(chs[1]), URI).outcome is Outcome.STALE
    assert auth.check("INVITE", authorize(chs[4], nc=2), URI).ok
    clock.advance(1)
    assert auth.check("INVITE", authorize(auth.challenge()), URI).ok


def test_replay_table_prunes_expired_nonces():
    clock = task.Clock()
    auth = make_auth(clock)
    for _ in range(20):
        assert auth.check("INVITE", authorize(auth.challenge()), URI).ok
    clock.advance(301)
    assert auth.check("INVITE", authorize(auth.challenge()), URI).ok
    assert len(auth._seen) == 1


# -- parsing ---------------------------------------------------------------------

def test_parse_tolerates_whitespace_case_and_escapes():
    p = parse_credentials(' dIgEsT\tUserName = "a\\"b" ,REALM="r",\r\n nonce=n , uri="sip:x",'
                          'response="0f", Algorithm=sha-256,QOP=Auth,nc=0000000A,cnonce=c, '
                          'userhash=false,x-future="ignored" ')
    assert p == {"username": 'a"b', "realm": "r", "nonce": "n", "uri": "sip:x",
                 "response": "0f", "algorithm": "SHA-256", "qop": "auth",
                 "nc": "0000000A", "cnonce": "c"}
    assert parse_credentials('Digest username="", realm="r", nonce="n", uri="u", '
                             'response="r"')["algorithm"] == "MD5"
    assert parse_auth_params('Digest a="x,y", b=t') == ("digest", {"a": "x,y", "b": "t"})


BASE = 'Digest username="u", realm="r", nonce="n", uri="u", response="r"'


@pytest.mark.parametrize("value, reason", [
    (BASE + ', realm="r"', "duplicate realm"),
    (BASE + ', REALM="r"', "duplicate realm"),
    (BASE.replace(', uri="u"', ""), "missing uri"),
    (BASE.replace('username="u", ', ""), "missing username"),
    (BASE + ", qop=auth, nc=00000001", "missing cnonce"),
    (BASE + ", qop=auth, cnonce=c", "missing nc"),
    (BASE + ", qop=auth, cnonce=c, nc=1", "bad nc"),
    (BASE + ", qop=auth, cnonce=c, nc=0000000g", "bad nc"),
    (BASE + ", qop=auth, cnonce=c, nc=00000000", "bad nc"),
    (BASE + ", nc=00000001, cnonce=c", "nc without qop"),
    (BASE + ",", "bad parameter syntax"),
    (BASE + ",, a=b", "bad parameter syntax"),
    (BASE + ' a="b"', "bad parameter syntax"),
    (BASE + ', a="unterminated', "bad parameter syntax"),
    (BASE + ', a="ctl\x01"', "bad parameter syntax"),
    (BASE + ', a="' + "x" * 257 + '"', "a too long"),
    (BASE + ", a=" + "x" * 4096, "too long"),
    ("Basic abc=", "not Digest"),
    ("Digest", "no parameters"),
    ("", "no scheme"),
    ('="x"', "no scheme"),
    (b"Digest x=y", "not text"),
])
def test_parse_refusals(value, reason):
    with pytest.raises(AuthError) as e:
        parse_credentials(value)
    assert e.value.reason == reason
    assert isinstance(e.value, ValueError)


GRAMMAR = st.text(alphabet='Digst =",\\\t\r\nabcnqoprueml0129-/\x00\ud800é', max_size=80)


@settings(max_examples=500, deadline=None)
@given(st.one_of(st.text(max_size=200), GRAMMAR, GRAMMAR.map(lambda t: BASE + t),
                 GRAMMAR.map(lambda t: "Digest " + t)))
def test_parsing_garbage_raises_only_auth_error(text):
    try:
        parse_credentials(text)
    except AuthError:
        pass
    verdict = make_auth().check("INVITE", text, URI)
    assert verdict.outcome in (Outcome.REFUSED, Outcome.MISSING)


# -- no single mutation of a valid value is accepted -------------------------------

def _quoted(text):
    return '"' + text.replace("\\", "\\\\").replace('"', '\\"') + '"'


def _same(a, b):
    try:
        return parse_credentials(a) == parse_credentials(b)
    except AuthError:
        return False


@settings(max_examples=600, deadline=None, suppress_health_check=[HealthCheck.filter_too_much])
@given(data=st.data(), algorithm=st.sampled_from(["SHA-256", "MD5"]),
       opaque=st.sampled_from([None, "op/aque"]), nc=st.integers(1, 2**32 - 1))
def test_single_mutation_never_accepted(data, algorithm, opaque, nc):
    clock = task.Clock()
    clock.advance(1000)
    auth = make_auth(clock, opaque=opaque)
    parts = client_parts(pick(auth.challenge(), algorithm), "alice", "wonderland",
                         "INVITE", URI, nc=nc, cnonce="f2/wE4q74E6z")
    original = join(parts)
    kind = data.draw(st.sampled_from(["change", "delete", "insert", "drop", "dup", "value"]))
    char = st.characters(min_codepoint=0, max_codepoint=0x7f) | st.sampled_from("é\u2028")
    if kind in ("change", "delete", "insert"):
        i = data.draw(st.integers(0, len(original) - (kind != "insert")))
        tail = original[i + 1:] if kind != "insert" else original[i:]
        mutated = original[:i] + ("" if kind == "delete" else data.draw(char)) + tail
    else:
        i = data.draw(st.integers(0, len(parts) - 1))
        new = list(parts)
        if kind == "drop":
            del new[i]
        elif kind == "dup":
            new.insert(i, parts[i])
        else:
            hexes = st.from_regex(r"[0-9a-f]{1,64}", fullmatch=True)
            value = data.draw(st.text(max_size=70) | hexes)
            new[i] = (parts[i][0], _quoted(value))
        mutated = join(new)
    assume(mutated != original and not _same(mutated, original))
    verdict = auth.check("INVITE", mutated, URI)
    assert verdict.outcome in (Outcome.REFUSED, Outcome.STALE), (mutated, verdict)
    # A refused mutation burns nothing: the genuine value still works.
    assert auth.check("INVITE", original, URI).ok


# -- failure limiter ----------------------------------------------------------------

def test_limiter_bans_after_max_failures_within_window_and_lifts():
    clock = task.Clock()
    lim = FailureLimiter(clock, max_failures=3, window=60.0, ban=300.0)
    assert not lim.failed("1.2.3.4") and not lim.failed("1.2.3.4")
    assert not lim.banned("1.2.3.4")
    assert lim.failed("1.2.3.4") and lim.banned("1.2.3.4")
    assert not lim.banned("5.6.7.8")
    clock.advance(299)
    assert lim.banned("1.2.3.4")
    clock.advance(1)
    assert not lim.banned("1.2.3.4")
    assert not lim.failed("1.2.3.4")     # the count starts over after a ban


def test_limiter_ignores_failures_spread_beyond_window():
    clock = task.Clock()
    lim = FailureLimiter(clock, max_failures=3, window=60.0)
    for _ in range(10):
        lim.failed("k")
        clock.advance(31)
    assert not lim.banned("k")
    lim.failed("k")
    lim.reset("k")
    assert not lim.failed("k")


def test_limiter_memory_is_bounded():
    clock = task.Clock()
    lim = FailureLimiter(clock, max_failures=2, max_sources=100)
    lim.failed("old")
    lim.failed("old")
    for i in range(1000):
        lim.failed(f"src{i}")
    assert len(lim._sources) == 100
    assert not lim.banned("old")          # evicted: the price of the bound
    assert lim.failed("src999")


# -- users file ----------------------------------------------------------------------

def test_load_users_three_and_four_fields(tmp_path):
    md5, sha = ha1("alice", REALM, "pw", "MD5"), ha1("alice", REALM, "pw", "SHA-256")
    text = ("# htdigest, plus an optional SHA-256 HA1\n\n"
            f"alice:{REALM}:{md5}:{sha.upper()}\n"
            f"bob:{REALM}:{ha1('bob', REALM, 'x')}\n"
            f"alice:elsewhere:{ha1('alice', 'elsewhere', 'pw')}\n"
            f"carol:elsewhere:bad\n")
    path = tmp_path / "users"
    path.write_text(text)
    loaded = load_users(str(path), REALM)
    assert loaded == load_users(text.splitlines(), REALM) == load_users(path, REALM)
    assert loaded == {"alice": {"MD5": md5, "SHA-256": sha},
                      "bob": {"MD5": ha1("bob", REALM, "x")}}
    auth = make_auth(credentials=loaded)
    ch = auth.challenge()
    assert auth.check("INVITE", authorize(ch, password="pw"), URI).ok
    assert auth.check("INVITE", authorize(ch, "MD5", user="bob", password="x", nc=2), URI).ok


@pytest.mark.parametrize("line", [
    "justone", "a:b", f"a:{REALM}:", f"a:{REALM}:{'0' * 31}", f"a:{REALM}:{'g' * 32}",
    f"a:{REALM}:{'0' * 32}:{'0' * 63}", f"a:{REALM}:{'0' * 32}:{'0' * 64}:x", f"::{'0' * 32}",
])
def test_load_users_errors_name_the_line(line):
    with pytest.raises(AuthError, match="^line 3: "):
        load_users(["# users", f"ok:{REALM}:{'0' * 32}", line], REALM)


def test_load_users_duplicate():
    with pytest.raises(AuthError, match="line 2: duplicate user a"):
        load_users([f"a:{REALM}:{'0' * 32}", f"a:{REALM}:{'1' * 32}"], REALM)
