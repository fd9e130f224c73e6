"""Recording a conference's mix: a WAV file and a JSON sidecar (issue 20).

Sans-IO-ish: a ``Recorder`` is given 20 ms frames (int16 at the mixer's
rate; None for a tick without a mix: silence, so the file's time runs
with the conference's) and a seekable file (a path or a binary file
object); time and free space come from the caller.  No reactor: the
focus feeds it from the engine's tick (focus/recordings.py).

- The file is RIFF/WAVE, ``WAVE_FORMAT_PCM`` (Microsoft's RIFF spec,
  "Multimedia Programming Interface and Data Specifications 1.0", 1991;
  the format tag of RFC 2361), 16-bit mono at the mixer's rate (16000,
  or 48000 with ``[media] mix_rate``), written by the stdlib ``wave``: the
  header once at the start with sizes 0, the RIFF and data sizes patched
  at ``stop`` (a recording cut short by a crash keeps its samples; a
  reader that trusts the sizes sees none: ``sox --ignore-length`` helps).
- Frames are gathered in a buffer of ``chunk`` seconds and written once
  it is full, so the tick pays a copy of 640 bytes, and a ``write`` once
  a second (into the page cache), not a system call per frame.
- Bounds: free space is asked (``free()``) every ``check`` seconds of
  audio, not per frame; below ``min_free`` bytes the recording stops by
  itself, as it does when its data would pass ``max_bytes`` (RIFF sizes
  are 32-bit: a WAV file ends below 4 GiB).
- Who was heard: ``members`` takes the conference's whole member view
  (every focus's members, from the replicated state: members of other
  foci are heard through the cascade) and turns the differences into
  joined / left / moved events; ``sidecar`` is the JSON beside the file.

Names are the focus's own: ``file_name`` makes one from the conference's
name (only ``[A-Za-z0-9._-]`` kept) and the UTC time; ``create`` opens it
``O_EXCL | O_NOFOLLOW`` in the configured directory, never a path a
client gave.
"""

import datetime
import json
import os
import re
import shutil
import wave

import numpy as np

__all__ = ["CHECK_SECONDS", "CHUNK_SECONDS", "Recorder", "RecordingRefused", "check_space",
           "create", "file_name", "iso", "write_sidecar"]

CHUNK_SECONDS = 1.0     # audio gathered before one write
CHECK_SECONDS = 5.0     # audio between two looks at the free space
MIB = 1 << 20
#: RIFF chunk sizes are 32-bit: header (44 bytes) plus data below 4 GiB
RIFF_LIMIT = (1 << 32) - 1 - 44
SAMPLE_WIDTH = 2        # 16-bit PCM


class RecordingRefused(Exception):
    """A recording is not started: ``status`` (HTTP) and the reason."""

    def __init__(self, status, reason):
        super().__init__(reason)
        self.status, self.reason = status, reason


def iso(t):
    """Unix time ``t`` as ISO 8601 UTC with milliseconds (RFC 3339 §5.6)."""
    if t is None:
        return None
    return datetime.datetime.fromtimestamp(t, datetime.timezone.utc) \
        .strftime("%Y-%m-%dT%H:%M:%S.%f")[:-3] + "Z"


def file_name(conference, t):
    """``NAME-YYYYMMDDTHHMMSSZ``: the conference's name with anything but
    ``[A-Za-z0-9._-]`` made ``_`` (no separator, no leading dot), at most
    64 characters, and the UTC time ``t``.  No extension."""
    safe = re.sub(r"[^A-Za-z0-9._-]", "_", conference)[:64].lstrip(".") or "conference"
    stamp = datetime.datetime.fromtimestamp(t, datetime.timezone.utc).strftime("%Y%m%dT%H%M%SZ")
    return f"{safe}-{stamp}"


def check_space(directory, min_free, disk_usage=shutil.disk_usage):
    """Refuse (RecordingRefused 507, RFC 4918 §11.5 Insufficient Storage)
    when ``directory`` has less than ``min_free`` bytes free."""
    free = disk_usage(directory).free
    if free < min_free:
        raise RecordingRefused(507, f"{free // MIB} MiB free in the recording directory, "
                                    f"below [recording] min_free_mb ({min_free // MIB})")
    return free


def create(directory, conference, t):
    """(path of the WAV file, its binary file object): a new file in
    ``directory`` named by ``file_name`` (``-2``, ``-3``… if taken),
    created exclusively, never through a symbolic link."""
    base = file_name(conference, t)
    flags = os.O_RDWR | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC    # POSIX
    for n in range(1, 100):
        path = os.path.join(directory, base + (f"-{n}" if n > 1 else "") + ".wav")
        try:
            fd = os.open(path, flags, 0o640)
        except FileExistsError:
            continue
        return path, os.fdopen(fd, "w+b")
    raise FileExistsError(f"{base}.wav: taken 99 times")


def write_sidecar(path, document):
    """Write ``document`` as JSON to ``path`` whole (a temporary file
    renamed over it: a reader never sees half)."""
    tmp = path + ".tmp"
    with open(tmp, "w", encoding="utf-8") as f:
        json.dump(document, f, indent=1)
        f.write("\n")
    os.replace(tmp, path)


class Recorder:
    """One recording: frames in, WAV out (see the module docstring).

    ``file``: a path or a seekable binary file object (not closed here).
    ``started``: Unix time of the first frame.  ``free``: a callable
    giving the bytes free where the file is (None: not checked);
    ``min_free``, ``max_bytes`` (0: no bound but RIFF's): the bounds.
    ``info``: what the sidecar says of the conference (name, uri...)."""

    def __init__(self, file, rate, started, *, max_bytes=0, min_free=0, free=None,
                 chunk=CHUNK_SECONDS, check=CHECK_SECONDS, info=None):
        self.rate, self.started, self.info = rate, started, dict(info or {})
        self.max_bytes = min(max_bytes or RIFF_LIMIT, RIFF_LIMIT)
        self.min_free, self.free = min_free, free
        self._wave = w = wave.open(file, "wb")
        w.setnchannels(1)
        w.setsampwidth(SAMPLE_WIDTH)
        w.setframerate(rate)
        w.writeframesraw(b"")           # the header, now, with sizes 0
        self._buffer = np.zeros(max(1, int(rate * chunk)), dtype=np.int16)
        self._filled = 0
        self._silence = np.zeros(rate // 50, dtype=np.int16)   # a tick nobody is mixed
        self._check = max(1, int(rate * check))  # samples between free-space checks
        self._until_check = self._check
        self.samples = 0                # samples taken (written or buffered)
        self.written = 0                # data bytes in the file
        self.writes = 0                 # write calls: the chunking, for the tests
        self.stopped = self.reason = None
        self.events = []                # {"time", "event", "uri", "endpoint", "focus"}
        self.members_seen = {}          # endpoint -> its interval (see members())
        self.intervals = []             # {"uri", "endpoint", "focus", "joined", "left"}

    @property
    def recording(self):
        return self.stopped is None

    @property
    def seconds(self):
        return self.samples / self.rate

    # -- audio ------------------------------------------------------------------

    def push(self, frame):
        """Take one frame (int16 samples; None: one 20 ms of silence).
        None while recording; the reason once it stopped by itself."""
        if self.reason is not None:
            return self.reason
        if frame is None:
            frame = self._silence
        n = len(frame)
        buffer, at = self._buffer, 0
        while at < n:
            room = min(len(buffer) - self._filled, n - at)
            buffer[self._filled:self._filled + room] = frame[at:at + room]
            self._filled += room
            at += room
            if self._filled == len(buffer):
                self._flush()
                if self.reason is not None:
                    return self.reason
        self.samples += n
        self._until_check -= n
        if self._until_check <= 0 and self.free is not None:
            self._until_check = self._check
            free = self.free()
            if free < self.min_free:
                self._stop_self(f"{free // MIB} MiB free, below [recording] min_free_mb "
                                f"({self.min_free // MIB})")
        return self.reason

    def _flush(self):
        """Write the buffer, cut at ``max_bytes``."""
        data = self._buffer[:self._filled]
        room = (self.max_bytes - self.written) // SAMPLE_WIDTH
        full = len(data) > room
        if full:
            data = data[:room]
        if len(data):
            self._wave.writeframesraw(data)
            self.written += len(data) * SAMPLE_WIDTH
            self.writes += 1
        self._filled = 0
        if full:
            self._stop_self(f"the file reached [recording] max_mb ({self.max_bytes // MIB})")

    def _stop_self(self, reason):
        self.reason = reason

    def stop(self, when, reason="stopped"):
        """Write what is buffered, patch the RIFF and data sizes, and end
        the recording at Unix time ``when``.  Idempotent."""
        if self.stopped is not None:
            return
        if self._filled:
            self._flush()
        self.reason = self.reason or reason
        self._wave.close()              # patches the sizes (wave: _patchheader)
        self.stopped = when

    # -- who was heard ------------------------------------------------------------

    def members(self, view, when):
        """The conference's members now: ``{endpoint: (uri, focus, joined)}``
        (``joined``: Unix time from the member's record, or None).  New
        endpoints are joined (at their own join time, if after the start),
        gone ones left at ``when``, a changed focus moved; a member still
        in when the recording stops keeps ``left`` None."""
        if self.stopped is not None:
            return
        seen = self.members_seen
        for endpoint, (uri, focus, joined) in view.items():
            interval = seen.get(endpoint)
            if interval is None:
                at = joined if joined is not None else when
                interval = seen[endpoint] = {"uri": uri, "endpoint": endpoint, "focus": focus,
                                             "joined": iso(at), "left": None}
                self.intervals.append(interval)
                self._event(at, "joined", interval)
            elif interval["focus"] != focus:
                interval["focus"] = focus
                self._event(when, "moved", interval)
        for endpoint in [e for e in seen if e not in view]:
            interval = seen.pop(endpoint)
            interval["left"] = iso(when)
            self._event(when, "left", interval)

    def _event(self, t, event, interval):
        self.events.append({"time": iso(t), "event": event, "uri": interval["uri"],
                            "endpoint": interval["endpoint"], "focus": interval["focus"]})

    def sidecar(self, file=None):
        """The JSON sidecar: the conference, the audio's format, start and
        stop, why it stopped, and who was in it when."""
        return {**self.info, "file": file, "format": {
                    "container": "WAV (RIFF WAVE_FORMAT_PCM)", "encoding": "pcm_s16le",
                    "rate": self.rate, "channels": 1},
                "started": iso(self.started), "stopped": iso(self.stopped),
                "stop_reason": self.reason if self.stopped is not None else None,
                "seconds": round(self.seconds, 3), "bytes": self.written,
                "members": [dict(i) for i in self.intervals], "events": list(self.events)}
