"""Recording a conference's mix (issue 20): the Recorder without a reactor
(WAV header and sizes, chunked writes, the sidecar, the bounds), the
focus's Recordings on a Clock, and a real ``twistd mfocus`` recording
three baresip tone phones (FFT of the WAV: every tone is in it)."""

import io
import json
import os
import struct
import time
import wave
from collections import namedtuple
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
from twisted.internet.task import Clock

from twisted_mfocus.config import Config, ConfigError
from twisted_mfocus.focus.recordings import Recordings
from twisted_mfocus.media.engine import MediaEngine
from twisted_mfocus.media.recording import (
    MIB,
    Recorder,
    RecordingRefused,
    check_space,
    create,
    file_name,
)

RATE = 16000
FRAME = RATE // 50
T0 = 1_800_000_000.0            # 2027-01-15T08:00:00Z
Usage = namedtuple("Usage", "total used free")


def tone(freq, frames, rate=RATE, amplitude=8000):
    t = np.arange(frames * (rate // 50)) / rate
    return (amplitude * np.sin(2 * np.pi * freq * t)).astype(np.int16).reshape(frames, -1)


def riff_sizes(data):
    """(RIFF chunk size, data chunk size) of a canonical 44-byte header."""
    assert data[:4] == b"RIFF" and data[8:16] == b"WAVEfmt " and data[36:40] == b"data"
    return struct.unpack("<I", data[4:8])[0], struct.unpack("<I", data[40:44])[0]


# -- the Recorder, sans IO ---------------------------------------------------------


def test_header_written_once_then_sizes_patched_at_stop():
    f = io.BytesIO()
    r = Recorder(f, RATE, T0)
    assert len(f.getvalue()) == 44 and riff_sizes(f.getvalue()) == (36, 0)
    for frame in tone(440, 60):
        assert r.push(frame) is None
    r.stop(T0 + 1.2)
    data = f.getvalue()
    assert riff_sizes(data) == (36 + 60 * FRAME * 2, 60 * FRAME * 2)
    with wave.open(io.BytesIO(data)) as w:
        assert (w.getnchannels(), w.getsampwidth(), w.getframerate()) == (1, 2, RATE)
        samples = np.frombuffer(w.readframes(w.getnframes()), dtype="<i2")
    assert np.array_equal(samples, tone(440, 60).ravel())
    assert r.reason == "stopped" and not r.recording and r.seconds == pytest.approx(1.2)


def test_frames_are_written_in_chunks_of_a_second_and_none_is_silence():
    f = io.BytesIO()
    r = Recorder(f, RATE, T0)
    for i in range(49):
        r.push(None if i % 2 else tone(1000, 1)[0])
    assert r.writes == 0 and len(f.getvalue()) == 44         # still buffered
    r.push(None)
    assert r.writes == 1 and len(f.getvalue()) == 44 + RATE * 2   # one second, once
    for _ in range(75):
        r.push(None)
    assert r.writes == 2
    r.stop(T0 + 2.5)
    assert r.writes == 3 and riff_sizes(f.getvalue())[1] == int(2.5 * RATE) * 2
    samples = np.frombuffer(f.getvalue()[44:], dtype="<i2").reshape(-1, FRAME)
    assert not samples[1].any() and samples[0].any()


def test_a_48_khz_mix_is_written_at_48_khz(tmp_path):
    path = str(tmp_path / "x.wav")
    r = Recorder(path, 48000, T0)
    for frame in tone(440, 10, rate=48000):
        r.push(frame)
    r.stop(T0 + 0.2)
    with wave.open(path) as w:
        assert (w.getframerate(), w.getnframes()) == (48000, 9600)


def test_stops_by_itself_at_max_bytes():
    f = io.BytesIO()
    r = Recorder(f, RATE, T0, max_bytes=RATE * 2 + 1000)  # a second and a bit
    reasons = [r.push(frame) for frame in tone(440, 150)]
    stopped = reasons.index(next(x for x in reasons if x))
    assert stopped == 99 and "max_mb" in reasons[stopped]          # at the 2nd write
    assert all(x == reasons[stopped] for x in reasons[stopped:])
    r.stop(T0 + 3)
    assert riff_sizes(f.getvalue())[1] == RATE * 2 + 1000 == r.written
    assert "max_mb" in r.reason


def test_free_space_is_looked_at_every_few_seconds_and_stops_it():
    asked = []
    free = [500 * MIB]

    def disk():
        asked.append(r.samples)
        return free[0]
    r = Recorder(io.BytesIO(), RATE, T0, min_free=100 * MIB, free=disk, check=5.0)
    for frame in tone(440, 500):            # 10 s: asked twice, not per frame
        assert r.push(frame) is None
    assert asked == [5 * RATE, 10 * RATE]
    free[0] = 99 * MIB
    reasons = [r.push(frame) for frame in tone(440, 250)]
    assert reasons[-1] and "min_free_mb" in reasons[-1] and reasons[-2] is None
    r.stop(T0 + 15)
    assert "min_free_mb" in r.reason


def test_refused_below_min_free_with_a_fake_disk_usage(tmp_path):
    with pytest.raises(RecordingRefused) as e:
        check_space(str(tmp_path), 100 * MIB, lambda d: Usage(10**9, 10**9, 50 * MIB))
    assert e.value.status == 507 and "min_free_mb (100)" in e.value.reason
    assert check_space(str(tmp_path), 100 * MIB,
                       lambda d: Usage(10**9, 0, 200 * MIB)) == 200 * MIB


def test_sidecar_lists_joins_leaves_and_moves():
    r = Recorder(io.BytesIO(), RATE, T0, info={"conference": "board"})
    a = ("sip:alice@x", "sip:f1", T0 - 30)
    r.members({"ea": a}, T0)
    r.members({"ea": a, "eb": ("sip:bob@x", "sip:f2", T0 + 2)}, T0 + 2.4)
    r.members({"eb": ("sip:bob@x", "sip:f1", T0 + 2)}, T0 + 5)
    r.stop(T0 + 6)
    doc = json.loads(json.dumps(r.sidecar("board.wav")))
    assert doc["conference"] == "board" and doc["file"] == "board.wav"
    assert doc["started"] == "2027-01-15T08:00:00.000Z"
    assert doc["stopped"] == "2027-01-15T08:00:06.000Z"
    assert doc["format"]["rate"] == RATE and doc["format"]["channels"] == 1
    assert doc["members"] == [
        {"uri": "sip:alice@x", "endpoint": "ea", "focus": "sip:f1",
         "joined": "2027-01-15T07:59:30.000Z", "left": "2027-01-15T08:00:05.000Z"},
        {"uri": "sip:bob@x", "endpoint": "eb", "focus": "sip:f1",
         "joined": "2027-01-15T08:00:02.000Z", "left": None}]
    assert [(e["event"], e["uri"], e["focus"]) for e in doc["events"]] == [
        ("joined", "sip:alice@x", "sip:f1"), ("joined", "sip:bob@x", "sip:f2"),
        ("moved", "sip:bob@x", "sip:f1"), ("left", "sip:alice@x", "sip:f1")]


def test_file_names_are_the_focus_own(tmp_path):
    assert file_name("board", T0) == "board-20270115T080000Z"
    assert file_name("../../etc/passwd", T0) == "_.._etc_passwd-20270115T080000Z"
    assert file_name("..", T0) == "conference-20270115T080000Z"
    path, f = create(str(tmp_path), "../evil", T0)
    f.close()
    assert os.path.dirname(path) == str(tmp_path)
    path2, f = create(str(tmp_path), "../evil", T0)         # same second: a new name
    f.close()
    assert path2 != path and path2.endswith("-2.wav")
    os.symlink(str(tmp_path / "elsewhere"), str(tmp_path / "b-20270115T080000Z.wav"))
    path3, f = create(str(tmp_path), "b", T0)               # never through the link
    f.close()
    assert path3.endswith("-2.wav") and not (tmp_path / "elsewhere").exists()


def test_config_recording_section(tmp_path):
    c = Config()
    assert (c.recording_directory, c.recording_min_free_mb, c.recording_max_mb) == \
        (None, 100, 1024)
    c = Config(overrides={("recording", "directory"): str(tmp_path)})
    assert c.recording_directory == str(tmp_path)
    with pytest.raises(ConfigError, match="recording.directory"):
        Config(overrides={("recording", "directory"): str(tmp_path / "none")})
    with pytest.raises(ConfigError, match="recording.max_mb"):
        Config(overrides={("recording", "max_mb"): "5000"})


# -- the focus's Recordings on a Clock -----------------------------------------------


class _Room:
    def __init__(self, name, members):
        self.name = name
        self.conference = SimpleNamespace(uri=f"sip:{name}@focus")
        rec = namedtuple("Rec", "user when")
        self.mesh = SimpleNamespace(replica=SimpleNamespace(
            members=lambda: {e: (f, rec(u, w)) for e, (u, f, w) in members.items()}))
        self.services = SimpleNamespace(rooms={name: self}, node=SimpleNamespace(uri="sip:f"))


def _recordings(tmp_path, free=10**12, directory=True, clock=None):
    config = SimpleNamespace(recording_directory=str(tmp_path) if directory else None,
                             recording_min_free_mb=100, recording_max_mb=1024)
    clock = clock or Clock()
    engine = MediaEngine(clock)
    return Recordings(clock, config, engine,
                      disk_usage=lambda d: Usage(10**12, 0, free)), engine, clock


def test_recordings_on_a_clock_record_silence_and_write_the_sidecar(tmp_path):
    clock = Clock()
    clock.advance(T0)
    recordings, engine, clock = _recordings(tmp_path, clock=clock)
    members = {"ea": ("sip:alice@x", "sip:focus", T0 - 5)}
    room = _Room("board", members)
    status, body = recordings.start(room)
    assert status == 200 and body["recording"] and body["file"].endswith(".wav")
    assert os.path.dirname(body["file"]) == str(tmp_path)
    assert recordings.path_of(room) == body["file"] and room in engine.taps
    assert recordings.start(room)[0] == 409
    for _ in range(100):                    # 2 s of ticks: nobody mixed, silence
        clock.advance(0.02)
    del members["ea"]
    clock.advance(1.0)
    status, stopped = recordings.stop(room)
    assert status == 200 and not stopped["recording"] and engine.taps == {}
    assert recordings.stop(room)[0] == 409 and recordings.path_of(room) is None
    with wave.open(body["file"]) as w:
        assert w.getframerate() == RATE and w.getnframes() >= 2 * RATE
    doc = json.loads(Path(body["sidecar"]).read_text())
    assert doc["conference"] == "board" and doc["stop_reason"] == "stopped by the operator"
    assert doc["recorded_by"] == "sip:f" and doc["uri"] == "sip:board@focus"
    assert [(e["event"], e["uri"]) for e in doc["events"]] == [
        ("joined", "sip:alice@x"), ("left", "sip:alice@x")]


def test_recordings_refuse_without_directory_or_space(tmp_path):
    recordings, _, _ = _recordings(tmp_path, directory=False)
    status, body = recordings.start(_Room("r", {}))
    assert status == 403 and "[recording] directory" in body["error"]
    recordings, _, _ = _recordings(tmp_path, free=50 * MIB)
    status, body = recordings.start(_Room("r", {}))
    assert status == 507 and "min_free_mb" in body["error"]
    assert os.listdir(tmp_path) == []


def test_a_retired_room_stops_its_recording(tmp_path):
    recordings, engine, clock = _recordings(tmp_path)
    room = _Room("gone", {})
    assert recordings.start(room)[0] == 200
    room.services.rooms.clear()
    clock.advance(1.0)
    assert recordings.active == {} and engine.taps == {}
    (sidecar,) = [n for n in os.listdir(tmp_path) if n.endswith(".json")]
    assert json.loads(Path(tmp_path / sidecar).read_text())["stop_reason"] == "the conference ended"


# -- a real focus, three tone phones -------------------------------------------------------


def post_json(port, path, body):
    from .test_moderation import post
    return post(port, path, body)


def test_three_tone_phones_are_in_the_recording(tmp_path):
    from .harness import wait_for
    from .onefocus import ROOM, Server
    from .peers import tone_phone
    from .peers.process import need
    from .tones import band_levels
    need("baresip")
    records = tmp_path / "records"
    records.mkdir()
    focus = Server(tmp_path, "33400-33499", f"[recording]\ndirectory = {records}\n")
    tones = {"alice": 440, "bob": 1000, "carol": 1500}
    phones = [tone_phone(tmp_path, name, freq, amplitude=0.2) for name, freq in tones.items()]
    record = f"/api/v1/conferences/{ROOM}/record"
    try:
        for phone in phones:
            phone.start()
            phone.dial(focus.uri())
            phone.wait_event("CALL_ESTABLISHED", 8)
        assert wait_for(lambda: len(focus.members()) == 3, timeout=10)
        assert post_json(focus.http, record, {"action": "bogus"})[0] == 400
        status, started = post_json(focus.http, record, {"action": "start"})
        assert status == 200 and started["recording"], started
        assert post_json(focus.http, record, {"action": "start"})[0] == 409
        from .harness import api_get
        assert api_get(focus.http, f"/api/v1/conferences/{ROOM}")[1]["recording"] == \
            started["file"]
        time.sleep(4)
        status, stopped = post_json(focus.http, record, {"action": "stop"})
        members = focus.members()
        view = api_get(focus.http, f"/api/v1/conferences/{ROOM}")[1]
        # The same by mfocusctl, as a process: text, then --json.
        from .test_ctl import ctl
        api = f"http://127.0.0.1:{focus.http}"
        code, out, err = ctl("record", ROOM, "start", api=api)
        assert code == 0 and out.startswith(f"recording {ROOM} to {records}"), (out, err)
        time.sleep(1)
        code, out, err = ctl("--json", "record", ROOM, "stop", api=api)
        by_ctl = json.loads(out)
        assert code == 0 and by_ctl["recording"] is False, (out, err)
        assert os.path.getsize(by_ctl["file"]) > 44 and by_ctl["file"] != started["file"]
        assert ctl("record", ROOM, "stop", api=api)[0] == 1        # not recording: 409
    finally:
        for phone in phones:
            phone.stop()
        focus.stop()
    assert status == 200 and not stopped["recording"] and stopped["file"] == started["file"]
    assert view["recording"] is None
    assert os.path.dirname(started["file"]) == str(records)
    with wave.open(started["file"]) as w:
        rate = w.getframerate()
        assert (w.getnchannels(), w.getsampwidth(), rate) == (1, 2, 16000)
        samples = np.frombuffer(w.readframes(w.getnframes()), dtype="<i2")
    assert len(samples) >= 3 * rate, len(samples)
    # The last 2 s at 8 kHz (tones.py's ears): the three tones, each present.
    levels = band_levels(samples[-2 * rate:][::rate // 8000], tones.values())
    assert all(level > 0.2 for level in levels.values()), levels
    doc = json.loads(Path(started["sidecar"]).read_text())
    assert doc["stop_reason"] == "stopped by the operator" and doc["stopped"]
    joined = {m["uri"]: m for m in doc["members"]}
    assert set(joined) == {p.aor for p in phones} == set(members)
    assert all(m["joined"] and m["left"] is None and m["focus"] == members[uri]["focus"]
               for uri, m in joined.items())


def test_recording_off_and_refused_below_min_free(tmp_path):
    from .harness import wait_for
    from .onefocus import ROOM, Server
    from .peers import tone_phone
    from .peers.process import need
    need("baresip")
    records = tmp_path / "records"
    records.mkdir()
    off = Server(tmp_path, "33500-33599")
    full = Server(tmp_path, "33600-33699",
                  f"[recording]\ndirectory = {records}\nmin_free_mb = 1000000000\n")
    alice = tone_phone(tmp_path, "alice", 440, amplitude=0.2)
    bob = tone_phone(tmp_path, "bob", 1000, amplitude=0.2)
    record = f"/api/v1/conferences/{ROOM}/record"
    try:
        assert post_json(off.http, record, {"action": "start"})[0] == 404   # no such room
        for phone, server in ((alice, off), (bob, full)):
            phone.start()
            phone.dial(server.uri())
            phone.wait_event("CALL_ESTABLISHED", 8)
            assert wait_for(lambda s=server: len(s.members()) == 1, timeout=10)
        status, body = post_json(off.http, record, {"action": "start"})
        assert status == 403 and "[recording] directory" in body["error"], body
        status, body = post_json(full.http, record, {"action": "start"})
        assert status == 507 and "min_free_mb" in body["error"], body
        assert post_json(full.http, record, {"action": "stop"})[0] == 409
    finally:
        for phone in (alice, bob):
            phone.stop()
        off.stop()
        full.stop()
    assert os.listdir(records) == []


# -- the API's route and mfocusctl's command, without a focus -------------------------


def test_the_api_takes_start_and_stop_and_refuses_other_bodies():
    from twisted.web.test.requesthelper import DummyRequest

    from twisted_mfocus.web.api import api_root

    from .apiviews import Views

    class Recording(Views):
        def record(self, name, start):
            self.calls.append(("record", name, start))
            return 200, {"file": "/r/x.wav", "sidecar": "/r/x.json", "recording": start}
    views = Recording()
    root = api_root(views, names=None)

    def post(body):
        request = DummyRequest([b"api", b"v1", b"conferences", b"room", b"record"])
        request.method = b"POST"
        request.content = io.BytesIO(body)
        out = root.render(request)
        return request.responseCode or 200, json.loads(out)
    assert post(b'{"action": "start"}') == (200, {"file": "/r/x.wav", "sidecar": "/r/x.json",
                                                   "recording": True})
    assert post(b'{"action": "stop"}')[1]["recording"] is False
    for bad in (b"", b"[]", b'{"action": "pause"}', b'{"action": "start", "file": "/etc/x"}'):
        assert post(bad)[0] == 400, bad
    assert post(b"x" * 5000)[0] == 413
    assert views.calls == [("record", "room", True), ("record", "room", False)]


def test_mfocusctl_record_sends_the_action_and_prints_the_file(monkeypatch, capsys):
    from twisted_mfocus import ctl
    sent = []

    def call(api, method, path, body=None, token=None, timeout=10.0):
        sent.append((method, path, body))
        return 200, {"file": "/r/a.wav", "sidecar": "/r/a.json", "recording": True}
    monkeypatch.setattr(ctl, "call", call)
    assert ctl.main(["record", "board", "start"]) == 0
    assert sent == [("POST", "/api/v1/conferences/board/record", {"action": "start"})]
    assert "/r/a.wav" in capsys.readouterr().out
    with pytest.raises(SystemExit) as e:
        ctl.main(["record", "board", "pause"])
    assert e.value.code == 2
