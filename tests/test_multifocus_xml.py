"""The inet-ci-multifocus-ext documents: valid RFC 4575 with a valid extension,
exact round trips of the replicated state, bounds, and hostile bodies only
ever giving MultifocusError."""

import copy
import re

import pytest
from hypothesis import HealthCheck, given, settings, strategies as st
from lxml import etree

from twisted_mfocus.conference import info, multifocus as mf
from twisted_mfocus.conference.model import Conference, Endpoint, Media
from twisted_mfocus.conference.multifocus import (MultifocusError, parse, render_deltas,
                                                  render_snapshot)
from twisted_mfocus.conference.replica import (DEL, FOCUS, SET, Delta, FocusRecord,
                                               MemberRecord, Partition, Snapshot)

CI = "urn:ietf:params:xml:ns:conference-info"
NS = {"ci": CI, "mf": mf.NAMESPACE}
CONF_URI = "sip:conf1@127.0.0.1"
A, B = "sip:127.0.0.1:5060", "sips:[::1]:5061;transport=tls"
ODD = 'a&b<c>d"e\'f é 中文 \U0001F600 \t\r\n end'


@pytest.fixture(scope="module")
def rfc_schema(shared_dir):
    xsd = shared_dir / "conference-info" / "conference-info.local-import.xsd"
    return etree.XMLSchema(etree.parse(str(xsd)))


def conference():
    conf = Conference("conf1", CONF_URI, subject="Weekly")
    for n, name in enumerate(["alice", "bob", "carol"], 1):
        conf.set_endpoint(f"sip:{name}@127.0.0.1",
                          Endpoint(f"sip:{name}@192.0.2.{n}:5060", when=1700000000.0,
                                   call_id=f"c{n}", from_tag="f", to_tag="t",
                                   media=[Media(f"{name}-a", src_id=str(n))]),
                          display_text=name.title())
    return conf


def member(name="alice", **kw):
    kw.setdefault("when", 1764000000.25)
    kw.setdefault("call_id", f"call-{name}@127.0.0.1")
    kw.setdefault("local_tag", f"lt-{name}")
    kw.setdefault("remote_tag", f"rt-{name}")
    kw.setdefault("remote_target", f"sip:{name}@192.0.2.1:5060")
    kw.setdefault("route", ("<sip:192.0.2.9;lr>", "<sip:192.0.2.10;lr;transport=tcp>"))
    kw.setdefault("media", "sendrecv")
    return MemberRecord(f"sip:{name}@192.0.2.1:5060", f"sip:{name}@127.0.0.1", **kw)


def focus(uri=A, **kw):
    fields = dict(role="primary", capacity=2, load=1, state="active",
                  links=(B, "sip:127.0.0.1:5062"))
    return FocusRecord(uri, **{**fields, **kw})


def partition(writer, seq, *members, with_focus=True):
    return Partition(seq, focus(writer) if with_focus else None,
                     {m.endpoint: m for m in members})


SNAPSHOT = Snapshot({
    A: partition(A, 12, member("alice"), member("bob", by="sip:alice@127.0.0.1",
                                                status="on-hold", joining_method="dialed-out")),
    B: partition(B, 3, MemberRecord("sip:carol@h", "sip:carol@127.0.0.1"), with_focus=False),
    "sip:empty@127.0.0.1": Partition(0, None, {}),
})
DELTAS = [
    Delta(A, 13, ((SET, member("dave")), (DEL, "sip:bob@192.0.2.1:5060"),
                  (FOCUS, focus(A, links=())))),
    Delta(B, 4, ()),
    Delta(B, 5, ((DEL, ""), (SET, MemberRecord("", ""))))
]


def full_doc(snapshot=SNAPSHOT, version=3):
    return info.render_full(conference(), extra=render_snapshot(snapshot)).with_version(version)


def partial_doc(deltas=DELTAS, version=4):
    conf = conference()
    conf.take_changes()
    conf.update_endpoint("sip:bob@127.0.0.1", "sip:bob@192.0.2.2:5060", status="on-hold")
    conf.remove_endpoint("sip:carol@127.0.0.1", "sip:carol@192.0.2.3:5060")
    return info.render_partial(conf, conf.take_changes(),
                               extra=render_deltas(deltas)).with_version(version)


def check_valid(doc, rfc_schema):
    """The document is valid RFC 4575 and its extension valid multifocus-ext."""
    root = etree.fromstring(doc)
    assert rfc_schema.validate(root), rfc_schema.error_log
    ext = root.xpath("mf:multifocus", namespaces=NS)
    assert len(ext) == 1 and root[-1] is not None and root[-1].tag == ext[0].tag
    assert mf.schema().validate(copy.deepcopy(ext[0])), mf.schema().error_log
    return root


# -- the documents --------------------------------------------------------

def test_full_document_is_valid_and_round_trips(rfc_schema):
    doc = full_doc()
    check_valid(doc, rfc_schema)
    assert parse(doc) == mf.Parsed("full", CONF_URI, 3, SNAPSHOT, [])


def test_partial_document_is_valid_and_round_trips(rfc_schema):
    doc = partial_doc()
    root = check_valid(doc, rfc_schema)
    assert root.xpath("ci:users/ci:user/@state", namespaces=NS) == ["full", "deleted"]
    assert parse(doc) == mf.Parsed("partial", CONF_URI, 4, None, DELTAS)


def test_focus_to_focus_partial_carries_only_the_deltas(rfc_schema):
    """What foci send each other (mesh.Batch): no <users>, whose members the
    deltas already carry; still valid RFC 4575 and round-tripping."""
    doc = info.render_partial(conference(), None, extra=render_deltas(DELTAS)).with_version(5)
    root = check_valid(doc, rfc_schema)
    assert root.xpath("ci:users", namespaces=NS) == []
    assert root.xpath("number(ci:conference-state/ci:user-count)", namespaces=NS) == 3
    assert parse(doc) == mf.Parsed("partial", CONF_URI, 5, None, DELTAS)
    assert len(doc) < len(partial_doc(version=5))


def test_a_plain_rfc4575_reader_still_reads_the_users(rfc_schema):
    root = etree.fromstring(full_doc(), etree.XMLParser())
    assert rfc_schema.validate(root)
    users = root.xpath("ci:users/ci:user", namespaces=NS)
    assert [u.get("entity") for u in users] == [
        "sip:alice@127.0.0.1", "sip:bob@127.0.0.1", "sip:carol@127.0.0.1"]
    assert root.xpath("string(ci:users/ci:user[2]/ci:display-text)", namespaces=NS) == "Bob"
    assert root.xpath("number(ci:conference-state/ci:user-count)", namespaces=NS) == 3


def test_constants():
    assert mf.EVENT == "inet-ci-multifocus-ext"
    assert mf.CONTENT_TYPE == "application/inet-ci-multifocus-ext+xml"
    assert mf.XSD_PATH.is_file() and mf.schema() is mf.schema()
    assert issubclass(MultifocusError, ValueError)


# -- exact round trips ----------------------------------------------------

ROUND_TRIPS = {
    "empty snapshot": Snapshot({}),
    "empty partition": Snapshot({A: Partition(0, None, {})}),
    "focus only": Snapshot({A: Partition(1, focus(links=()), {})}),
    "all None": Snapshot({A: Partition(7, None, {"e": MemberRecord("e", "u")})}),
    "all empty": Snapshot({A: Partition(7, None, {"": MemberRecord(
        "", "", by="", call_id="", local_tag="", remote_tag="", remote_target="",
        route=("",))})}),
    "route only": Snapshot({A: Partition(7, None, {"e": MemberRecord("e", "u",
                                                                     route=("r",))})}),
    "odd characters": Snapshot({"sip:" + ODD.replace(" ", "").replace("\t", "")
                                .replace("\r", "").replace("\n", ""): Partition(
        2, None, {ODD: member(by=ODD, call_id=ODD, local_tag=ODD, remote_tag=ODD,
                              remote_target=ODD, route=(ODD, "<" + ODD + ">"))
                  ._replace(endpoint=ODD, user=ODD)})}),
    "extreme numbers": Snapshot({"SIPS:x": Partition(2 ** 64 - 1, FocusRecord(
        "sip:x", "secondary", 2 ** 32 - 1, 0, "failed"), {
            m.endpoint: m for m in (member(str(w), when=w) for w in (
                0.0, 0.1, 1e+16, 5e-324, 1.7976931348623157e+308, -1.5, 1764000000.123456789,
                2 ** 53 + 1.0))})}),
    "epochs and down claims": Snapshot({A: Partition(4, FocusRecord(
        A, "primary", 3, 1, "active", (B,), epoch=2, down=((B, 0), ("sip:c:1", 7))),
        {"e": MemberRecord("e", "u", epoch=5)}), B: Partition(
        9, FocusRecord(B, "secondary", 3, 0, "left", epoch=1), {})}),
}


@pytest.mark.parametrize("name", sorted(ROUND_TRIPS))
def test_snapshot_round_trips(name, rfc_schema):
    snap = ROUND_TRIPS[name]
    doc = full_doc(snap)
    check_valid(doc, rfc_schema)
    parsed = parse(doc).snapshot
    assert parsed == snap
    for writer, part in snap.partitions.items():   # order and types too
        assert list(parsed.partitions[writer].members.items()) == list(part.members.items())
        for ep, m in part.members.items():
            assert [type(v) for v in parsed.partitions[writer].members[ep]] == \
                [type(v) for v in m]
    assert list(parsed.partitions) == list(snap.partitions)


def test_deltas_round_trip_in_order(rfc_schema):
    deltas = [Delta(A, s, ((DEL, f"e{s}"), (SET, member(f"m{s}")), (FOCUS, focus(load=s))))
              for s in range(1, 20)] + [Delta(B, 1, ((DEL, ODD),))]
    doc = partial_doc(deltas)
    check_valid(doc, rfc_schema)
    assert parse(doc).deltas == deltas
    assert parse(partial_doc([])) == mf.Parsed("partial", CONF_URI, 4, None, [])


def test_xml_illegal_characters_become_replacement_characters(rfc_schema):
    """Documented loss: XML 1.0 cannot carry controls or lone surrogates."""
    bad = "a\x01b\x1fc\ud800d\ufffee"
    snap = Snapshot({A: Partition(1, None, {bad: MemberRecord(bad, "u", by=bad)})})
    doc = full_doc(snap)
    check_valid(doc, rfc_schema)
    (m,) = parse(doc).snapshot.partitions[A].members.values()
    assert m.endpoint == m.by == "a\ufffdb\ufffdc\ufffdd\ufffde"


_xml_text = st.text(max_size=12).map(lambda s: info._NOT_XML.sub("", s))
_opt = st.none() | _xml_text
_sip = st.from_regex(r"\A[Ss][Ii][Pp][Ss]?:[^ \t\n\r]{1,10}\Z").map(
    lambda s: info._NOT_XML.sub("", s) or "sip:x").filter(lambda s: re.fullmatch(
        r"[Ss][Ii][Pp][Ss]?:[^ \t\n\r]+", s))
_members = st.builds(
    MemberRecord, _xml_text, _xml_text, st.sampled_from(["connected", "on-hold", "pending"]),
    st.sampled_from(["dialed-in", "dialed-out", "focus-owner"]),
    st.none() | st.floats(allow_nan=False, allow_infinity=False), _opt,
    st.none() | st.sampled_from(["sendrecv", "inactive"]), _opt, _opt, _opt, _opt,
    st.lists(_xml_text, max_size=3).map(tuple), st.integers(0, 2 ** 32 - 1),
    st.none() | st.sampled_from(["RTP/SAVP", "RTP/SAVPF", "RTP/AVP"]),
    st.none() | st.sampled_from(["opus/48000/2", "G722/8000", "PCMU/8000"]))
_foci = st.builds(FocusRecord, _sip, st.sampled_from(["primary", "secondary"]),
                  st.integers(0, 2 ** 32 - 1), st.integers(0, 2 ** 32 - 1),
                  st.sampled_from(["active", "leaving", "failed", "left"]),
                  st.lists(_sip, max_size=3).map(tuple), st.integers(0, 2 ** 32 - 1),
                  st.lists(st.tuples(_sip, st.integers(0, 2 ** 32 - 1)),
                           max_size=3).map(tuple),
                  st.none() | st.sampled_from(["127.0.0.1:5061", "[::1]:65535",
                                                "focus.example.com:1"]))
_ops = st.one_of(st.tuples(st.just(SET), _members), st.tuples(st.just(DEL), _xml_text),
                 st.tuples(st.just(FOCUS), _foci))


@settings(max_examples=150, deadline=None)
@given(st.dictionaries(_sip, st.builds(
    Partition, st.integers(0, 2 ** 64 - 1), st.none() | _foci,
    st.lists(_members, max_size=3).map(lambda ms: {m.endpoint: m for m in ms})), max_size=3),
    st.lists(st.builds(Delta, _sip, st.integers(0, 2 ** 64 - 1),
                       st.lists(_ops, max_size=4).map(tuple)), max_size=3))
def test_generated_state_round_trips(partitions, deltas):
    snap = Snapshot(partitions)
    assert parse(full_doc(snap)).snapshot == snap
    assert mf.schema().validate(etree.fromstring(render_snapshot(snap)))
    assert parse(partial_doc(deltas)).deltas == deltas
    assert mf.schema().validate(etree.fromstring(render_deltas(deltas)))


def test_rendering_refuses_records_no_peer_would_accept():
    for bad in [Snapshot({"http://x": Partition(1, None, {})}),
                Snapshot({A: Partition(-1, None, {})}),
                Snapshot({A: Partition(1, focus(role="boss"), {})}),
                Snapshot({A: Partition(1, focus()._replace(capacity=2 ** 32), {})}),
                Snapshot({A: Partition(1, focus(links=("tel:123",)), {})}),
                Snapshot({A: Partition(1, None, {"e": member(status="asleep")})}),
                Snapshot({A: Partition(1, None, {"e": member(when=float("nan"))})}),
                Snapshot({A: Partition(1, None, {"e": member(media="loud")})}),
                Snapshot({A: Partition(1, None, {"e": member(srtp="RTP/SAVPX")})}),
                Snapshot({A: Partition(1, None, {"e": member(codec="opus 48000")})}),
                Snapshot({A: Partition(1, focus(tls="127.0.0.1"), {})}),
                Snapshot({A: Partition(1, focus(tls="a b:5061"), {})})]:
        with pytest.raises(ValueError):
            render_snapshot(bad)
    with pytest.raises(ValueError):
        render_deltas([Delta(A, 1, (("move", "x"),))])


# -- bounds ---------------------------------------------------------------

def _raises(doc, match):
    with pytest.raises(MultifocusError, match=match):
        parse(doc)


def test_bounds_are_inclusive_and_enforced():
    many = {f"sip:f{i}": Partition(1, None, {}) for i in range(mf.MAX_PARTITIONS + 1)}
    parse(full_doc(Snapshot(dict(list(many.items())[:-1]))))
    _raises(full_doc(Snapshot(many)), "<partition>")

    ms = [MemberRecord(f"e{i}", "u") for i in range(mf.MAX_MEMBERS + 1)]
    half = len(ms) // 2
    parse(full_doc(Snapshot({A: partition(A, 1, *ms[:half]), B: partition(B, 1, *ms[half:-1])})))
    _raises(full_doc(Snapshot({A: partition(A, 1, *ms[:half]), B: partition(B, 1, *ms[half:])})),
            "members")

    ds = [Delta(A, i, ()) for i in range(mf.MAX_DELTAS + 1)]
    parse(partial_doc(ds[:-1]))
    _raises(partial_doc(ds), "<delta>")

    n = mf.MAX_OPS // 2
    ops = [Delta(A, 1, ((DEL, "e"),) * n), Delta(A, 2, ((DEL, "e"),) * n)]
    parse(partial_doc(ops))
    _raises(partial_doc(ops + [Delta(A, 3, ((DEL, "e"),))]), "operations")

    links = tuple(f"sip:f{i}" for i in range(mf.MAX_LINKS + 1))
    parse(full_doc(Snapshot({A: Partition(1, focus(links=links[:-1]), {})})))
    _raises(full_doc(Snapshot({A: Partition(1, focus(links=links), {})})), "<link>")

    route = tuple(f"<sip:r{i};lr>" for i in range(mf.MAX_ROUTE + 1))
    parse(full_doc(Snapshot({A: partition(A, 1, member(route=route[:-1]))})))
    _raises(full_doc(Snapshot({A: partition(A, 1, member(route=route))})), "<route>")


def test_body_size_is_checked_before_parsing():
    doc = full_doc()
    pad = b" " * (mf.MAX_BODY - len(doc))
    assert parse(doc + pad).version == 3
    _raises(doc + pad + b" ", "bytes")
    _raises(b"<" * (mf.MAX_BODY + 1), "bytes")


# -- garbage --------------------------------------------------------------

def edit(doc, xpath, attr=None, value=None, remove=False, add=None):
    """``doc`` with the first node at ``xpath`` changed."""
    root = etree.fromstring(doc)
    (el,) = root.xpath(xpath, namespaces=NS)[:1]
    if remove and attr:
        del el.attrib[attr]
    elif remove:
        el.getparent().remove(el)
    elif attr:
        el.set(attr, value)
    if add is not None:
        el.append(etree.fromstring(add))
    return etree.tostring(root)


P = "mf:multifocus/mf:partition"
F, M = P + "/mf:focus", P + "/mf:member"
D = "mf:multifocus/mf:delta"
UNKNOWN = f'<mf:bogus xmlns:mf="{mf.NAMESPACE}"/>'
LOL = (b'<?xml version="1.0"?><!DOCTYPE lolz [<!ENTITY lol "lol">'
       b'<!ENTITY lol2 "&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;">'
       b'<!ENTITY lol3 "&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;">]>'
       b'<conference-info xmlns="' + CI.encode() + b'" entity="&lol3;" version="1"/>')
XXE = (b'<!DOCTYPE c [<!ENTITY x SYSTEM "file:///etc/passwd">]><conference-info xmlns="'
       + CI.encode() + b'" entity="&x;" version="1"><users>&x;</users></conference-info>')

GARBAGE = {
    "empty": (lambda: b"", "not an XML"),
    "not xml": (lambda: b"SIP/2.0 200 OK\r\n", "not an XML"),
    "truncated": (lambda: full_doc()[:-30], "not an XML"),
    "utf-16": (lambda: full_doc().decode().replace("UTF-8", "UTF-16").encode("utf-16"),
               "not an XML"),
    "billion laughs": (lambda: LOL, "DTD"),
    "external entity": (lambda: XXE, "DTD"),
    "wrong root": (lambda: b'<conference-info entity="x" version="1"/>', "root element"),
    "no entity": (lambda: edit(full_doc(), ".", "entity", remove=True), "entity"),
    "no version": (lambda: edit(full_doc(), ".", "version", remove=True), "version"),
    "big version": (lambda: edit(full_doc(), ".", "version", str(2 ** 32)), "version"),
    "state deleted": (lambda: edit(full_doc(), ".", "state", "deleted"), "state"),
    "no extension": (lambda: edit(full_doc(), "mf:multifocus", remove=True), "no <multifocus>"),
    "two extensions": (lambda: edit(full_doc(), ".",
                                    add=f'<x:multifocus xmlns:x="{mf.NAMESPACE}"/>'),
                       "more than 1 <multifocus>"),
    "our element at the root": (lambda: edit(full_doc(), ".", add=UNKNOWN), "bogus"),
    "delta in full": (lambda: edit(full_doc(), "mf:multifocus",
                                   add=f'<mf:delta xmlns:mf="{mf.NAMESPACE}"/>'), "delta"),
    "partition in partial": (lambda: edit(partial_doc(), "mf:multifocus",
                                          add=f'<mf:partition xmlns:mf="{mf.NAMESPACE}"/>'),
                             "partition"),
    "no writer": (lambda: edit(full_doc(), P, "writer", remove=True), "writer"),
    "http writer": (lambda: edit(full_doc(), P, "writer", "http://x"), "sip: or sips:"),
    "bare sip: writer": (lambda: edit(full_doc(), P, "writer", "sip:"), "writer"),
    "space in writer": (lambda: edit(partial_doc(), D, "writer", "sip:a b"), "writer"),
    "no seq": (lambda: edit(partial_doc(), D, "seq", remove=True), "seq"),
    "negative seq": (lambda: edit(full_doc(), P, "seq", "-1"), "seq"),
    "underscore seq": (lambda: edit(full_doc(), P, "seq", "1_000"), "seq"),
    "arabic digits": (lambda: edit(full_doc(), P, "seq", "\u0661\u0662"), "seq"),
    "padded seq": (lambda: edit(full_doc(), P, "seq", " 1"), "seq"),
    "huge seq": (lambda: edit(full_doc(), P, "seq", str(2 ** 64)), "seq"),
    "duplicate writer": (lambda: edit(full_doc(), P, "writer", B), "two partitions"),
    "unknown in partition": (lambda: edit(full_doc(), P, add=UNKNOWN), "bogus"),
    "two foci": (lambda: edit(full_doc(), P, add=etree.tostring(
        etree.fromstring(render_snapshot(SNAPSHOT))[0][0])), "two <focus>"),
    "bad role": (lambda: edit(full_doc(), F, "role", "boss"), "role"),
    "bad state": (lambda: edit(full_doc(), F, "state", "asleep"), "state"),
    "bad capacity": (lambda: edit(full_doc(), F, "capacity", "2.5"), "capacity"),
    "no load": (lambda: edit(full_doc(), F, "load", remove=True), "load"),
    "bad link": (lambda: edit(full_doc(), F + "/mf:link", "uri", "tel:1"), "link"),
    "unknown in focus": (lambda: edit(full_doc(), F, add=UNKNOWN), "bogus"),
    "no endpoint": (lambda: edit(full_doc(), M, "endpoint", remove=True), "endpoint"),
    "no user": (lambda: edit(full_doc(), M, "user", remove=True), "user"),
    "bad status": (lambda: edit(full_doc(), M, "status", "asleep"), "status"),
    "no joining-method": (lambda: edit(full_doc(), M, "joining-method", remove=True),
                          "joining-method"),
    "bad media": (lambda: edit(full_doc(), M, "media", "loud"), "media"),
    "when inf": (lambda: edit(full_doc(), M, "when", "inf"), "when"),
    "when nan": (lambda: edit(full_doc(), M, "when", "NaN"), "when"),
    "when overflows": (lambda: edit(full_doc(), M, "when", "1e999"), "when"),
    "when text": (lambda: edit(full_doc(), M, "when", "yesterday"), "when"),
    "when long": (lambda: edit(full_doc(), M, "when", "1" * 41), "when"),
    "duplicate endpoint": (lambda: edit(full_doc(), M, "endpoint",
                                        "sip:bob@192.0.2.1:5060"), "two members"),
    "two dialogs": (lambda: edit(full_doc(), M, add=f'<mf:dialog xmlns:mf="{mf.NAMESPACE}"/>'),
                    "more than 1 <dialog>"),
    "unknown in member": (lambda: edit(full_doc(), M, add=UNKNOWN), "bogus"),
    "route without uri": (lambda: edit(full_doc(), M + "/mf:dialog/mf:route", "uri",
                                       remove=True), "route"),
    "unknown in dialog": (lambda: edit(full_doc(), M + "/mf:dialog", add=UNKNOWN), "bogus"),
    "unknown op": (lambda: edit(partial_doc(), D, add=UNKNOWN), "unknown operation"),
    "empty set": (lambda: edit(partial_doc(), D + "/mf:set/mf:member", remove=True),
                  "without a <member>"),
    "set of two": (lambda: edit(partial_doc(), D + "/mf:set", add=etree.tostring(
        etree.fromstring(render_snapshot(SNAPSHOT))[0][1])), "more than 1 <member>"),
    "del without endpoint": (lambda: edit(partial_doc(), D + "/mf:del", "endpoint",
                                          remove=True), "endpoint"),
}


@pytest.mark.parametrize("name", sorted(GARBAGE))
def test_garbage_raises_multifocus_error(name):
    make, match = GARBAGE[name]
    _raises(make(), match)


def test_the_xsd_rejects_what_parse_rejects():
    """The schema says the same as the parser (a sample of the rules)."""
    for name in ["bad role", "negative seq", "when inf", "bad link", "duplicate endpoint",
                 "duplicate writer", "unknown in member", "set of two", "no user"]:
        root = etree.fromstring(GARBAGE[name][0]())
        assert not mf.schema().validate(copy.deepcopy(root[-1])), name


def test_body_must_be_bytes():
    with pytest.raises(TypeError):
        parse(full_doc().decode())


def test_other_namespaces_are_ignored_everywhere():
    other = '<x:ext xmlns:x="urn:example:other" x:a="1"><x:deeper/></x:ext>'
    doc = full_doc()
    for where in [".", "mf:multifocus", P, F, M, M + "/mf:dialog"]:
        doc = edit(doc, where, add=other)
    doc = edit(doc, P, "{urn:example:other}attr", "v")
    assert parse(doc).snapshot == SNAPSHOT
    partial = edit(partial_doc(), D, add=other)
    assert parse(edit(partial, D + "/mf:set", add=other)).deltas == DELTAS
    assert parse(b"<!-- hi -->" + full_doc().split(b"\n", 1)[1]).snapshot == SNAPSHOT


# -- fuzz -----------------------------------------------------------------

SEEDS = [full_doc(), partial_doc(), full_doc(ROUND_TRIPS["odd characters"])]
FUZZ = settings(max_examples=300, deadline=None,
                suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
SPECIAL = [b"<", b">", b'"', b"&", b"&amp;", b"&#0;", b"&#xD800;", b"\x00", b"\xff",
           b"<!DOCTYPE x>", b"]]>", b"<![CDATA[", b"<?pi x?>", b"<!--", b"/>",
           b"<mf:bogus/>", b"<x:y xmlns:x='u'/>", b' a="1"', b' seq="-1"', b"\xe9"]


@st.composite
def mutated(draw):
    data = bytearray(draw(st.sampled_from(SEEDS)))
    for _ in range(draw(st.integers(1, 5))):
        kind = draw(st.sampled_from(["flip", "insert", "delete", "truncate", "special",
                                     "duplicate"]))
        pos = draw(st.integers(0, len(data)))
        if kind == "flip" and pos < len(data):
            data[pos] = draw(st.integers(0, 255))
        elif kind == "insert":
            data[pos:pos] = draw(st.binary(min_size=1, max_size=8))
        elif kind == "delete":
            del data[pos:pos + draw(st.integers(1, 40))]
        elif kind == "truncate":
            del data[pos:]
        elif kind == "duplicate":
            data[pos:pos] = data[pos:pos + draw(st.integers(1, 200))]
        else:
            data[pos:pos] = draw(st.sampled_from(SPECIAL))
    return bytes(data)


@FUZZ
@given(mutated())
def test_mutated_documents_give_a_result_or_multifocus_error(data):
    try:
        result = parse(data)
    except MultifocusError as e:
        assert str(e)
    else:
        assert result.state in ("full", "partial")
        assert (result.snapshot is None) == (result.state == "partial")
