"""Members hear one conference (issue 6): baresip phones each send their
own tone; what each received from the focus is taken from a capture of its
RTP port on lo (dumpcap), decoded, and analysed by FFT band energy: the
other members' tones are there, its own is not."""

import time

from .foci import start_foci, stop_all, wait_agreement
from .harness import api_post, wait_for
from .pcap import Capture
from .peers import dial_all, tone_phone
from .peers.process import need
from .tones import TONES, heard

CONF = "tones"


def phones_on(tmp_path, names, rtp_span=2):
    return [tone_phone(tmp_path, name, TONES[name], rtp_span) for name in names]


def rtp_filter(phones):
    return "udp and (" + " or ".join(f"dst portrange {p.rtp_low}-{p.rtp_high}"
                                     for p in phones) + ")"


def assert_each_hears_the_others(pcap, phones, end=float("inf"), tones=TONES, why=None):
    """Each phone heard every other phone's tone and not its own (the last
    2 s before ``end``)."""
    tones = {p.name: tones[p.name] for p in phones}
    start = end - 2.5 if end != float("inf") else 0.0
    for phone in phones:
        assert heard(pcap, phone, start, end, tones) == \
            set(tones.values()) - {tones[phone.name]}, (phone.name, why)


def test_one_focus_three_baresip_members_hear_the_other_two(tmp_path):
    need("baresip", "dumpcap")
    nodes = start_foci(tmp_path, [("focus", "primary", 10)])
    focus = nodes[0]
    phones = phones_on(tmp_path, TONES)
    capture = Capture(str(tmp_path / "rtp.pcap"), bpf=rtp_filter(phones))
    try:
        dial_all(phones, f"sip:{CONF}@127.0.0.1:{focus.port}")
        assert wait_for(lambda: len(focus.conference(CONF)["members"]) == 3, timeout=10)
        time.sleep(3)                   # a few seconds of the three-way mix
    finally:
        capture.stop()
        for phone in phones:
            phone.stop()
        stop_all(nodes)
    assert_each_hears_the_others(capture.path, phones)


def test_mute_by_api_and_by_star_6(tmp_path):
    """A muted member's tone leaves the others' audio and comes back on
    unmute: by the API (alice), and by RFC 4733 *6 from the phone (bob)."""
    need("baresip", "dumpcap")
    nodes = start_foci(tmp_path, [("focus", "primary", 10)])
    focus = nodes[0]
    phones = phones_on(tmp_path, TONES)
    alice, bob, carol = phones
    capture = Capture(str(tmp_path / "rtp.pcap"), bpf=rtp_filter(phones))
    marks = []

    def media_of(phone):
        return {m["uri"]: m["media"] for m in focus.conference(CONF)["members"]}.get(phone.aor)

    def step(name, action=None, media=None):
        if action is not None:
            action()
        if media is not None:
            assert wait_for(lambda: media_of(media[0]) == media[1], timeout=5), \
                (name, media_of(media[0]))
        time.sleep(3)
        marks.append((name, time.time()))
    try:
        dial_all(phones, f"sip:{CONF}@127.0.0.1:{focus.port}")
        assert wait_for(lambda: len(focus.conference(CONF)["members"]) == 3, timeout=10)
        mute = f"/api/v1/conferences/{CONF}/members/{alice.aor.replace(':', '%3A')}"
        step("all")
        step("alice muted by the API", lambda: api_post(focus.http, mute + "/mute"),
             (alice, "sendonly"))
        step("alice unmuted", lambda: api_post(focus.http, mute + "/unmute"),
             (alice, "sendrecv"))
        step("bob pressed *6", lambda: bob.command("sndcode", "*6"), (bob, "sendonly"))
        step("bob pressed *6 again", lambda: bob.command("sndcode", "*6"), (bob, "sendrecv"))
    finally:
        capture.stop()
        for phone in phones:
            phone.stop()
        stop_all(nodes)
    a, b, c = (TONES[p.name] for p in phones)
    expect = {"all": {alice: {b, c}, bob: {a, c}, carol: {a, b}},
              "alice muted by the API": {bob: {c}, carol: {b}, alice: {b, c}},
              "alice unmuted": {bob: {a, c}, carol: {a, b}},
              "bob pressed *6": {alice: {c}, carol: {a}, bob: {a, c}},
              "bob pressed *6 again": {alice: {b, c}, carol: {a, b}}}
    for name, end in marks:
        for phone, tones in expect[name].items():
            assert heard(capture.path, phone, end - 2.5, end) == tones, (name, phone.name)


def test_three_foci_one_member_each_hear_the_other_two(tmp_path):
    """Alice stays on the primary (capacity 1), bob and carol are handed to
    one secondary each; the foci's cascade legs carry each focus's own
    members to the others: each still hears the other two, not itself."""
    need("baresip", "dumpcap")
    nodes = start_foci(tmp_path, [("primary", "primary", 1), ("s1", "secondary", 1),
                                  ("s2", "secondary", 1)])
    primary = nodes[0]
    phones = phones_on(tmp_path, TONES, rtp_span=6)     # room for the handover call
    capture = Capture(str(tmp_path / "rtp.pcap"), bpf=rtp_filter(phones))
    try:
        dial_all(phones, f"sip:{CONF}@127.0.0.1:{primary.port}")
        view, _ = wait_agreement(nodes, CONF, lambda v: len(v[0]) == 3 and
                                 len({m[2] for m in v[0]}) == 3, timeout=20)
        assert view is not None, [node.conference(CONF) for node in nodes]
        assert all(wait_for(lambda: len(p.calls()) == 1, timeout=10) for p in phones)

        def settled():                  # every cascade up, every member sendrecv
            views = [node.conference(CONF) for node in nodes]
            return all(len(v["cascades"]) == 2 and
                       all(m["media"] == "sendrecv" for m in v["members"]) for v in views)
        assert wait_for(settled, timeout=15), [node.conference(CONF) for node in nodes]
        time.sleep(4)                   # seconds of the cascaded mix
        end = time.time()
        states = [(node.name, node.conference(CONF)) for node in nodes]
    finally:
        capture.stop()
        for phone in phones:
            phone.stop()
        stop_all(nodes)
    assert_each_hears_the_others(capture.path, phones, end, why=states)
