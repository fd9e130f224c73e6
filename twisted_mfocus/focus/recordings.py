"""Recording a room (issue 20): the focus's side of media/recording.py.

``Recordings`` starts and stops a room's recording for the API
(moderation.py): the file is made by the focus in ``[recording]
directory`` (media/recording.create: the room's name and the UTC time,
never a client's path); the engine's tap gives its Recorder the room's
whole mix each tick (every voice once: our members and the cascade
peers' streams, media/engine.py).  Once a second the room's member view,
the replicated one (every focus's members: those of other foci are heard
through the cascade), goes to the Recorder, which notes who joined, left
or moved; a recording whose room was retired stops then.

Answers are ``(HTTP status, JSON body)``: 403 with recording off (no
directory configured: nothing may be written anywhere), 409 for a room
already (or not) recording, 507 Insufficient Storage (RFC 4918 §11.5)
below ``min_free_mb``, 500 for a file that cannot be made.  The bounds
met while recording (free space, ``max_mb``) stop it by itself, logged.
"""

import os
import shutil

from twisted.internet import task
from twisted.logger import Logger

from ..media.recording import MIB, Recorder, RecordingRefused, check_space, create, \
    write_sidecar

__all__ = ["Recordings"]

MEMBERS_EVERY = 1.0     # seconds between two looks at a recorded room's members


class _Recording:
    """One room's recording: its Recorder, file and sidecar paths."""

    __slots__ = ("recorder", "path", "sidecar", "file")

    def __init__(self, recorder, path, file):
        self.recorder, self.path, self.file = recorder, path, file
        self.sidecar = os.path.splitext(path)[0] + ".json"


class Recordings:
    """The rooms being recorded at this focus (``[recording]``)."""

    log = Logger()

    def __init__(self, clock, config, engine, disk_usage=shutil.disk_usage):
        self.clock, self.engine, self.disk_usage = clock, engine, disk_usage
        self.directory = config.recording_directory        # None: recording is off
        self.min_free = config.recording_min_free_mb * MIB
        self.max_bytes = config.recording_max_mb * MIB
        self.active = {}                # room -> _Recording
        self._loop = None

    def path_of(self, room):
        """The file ``room`` is being recorded to, or None."""
        recording = self.active.get(room)
        return recording.path if recording is not None else None

    def start(self, room):
        if self.directory is None:
            return 403, {"error": "recording is off at this focus ([recording] directory "
                                  "is not set)"}
        if room in self.active:
            recording = self.active[room]
            return 409, {"error": "already recording", "file": recording.path,
                         "sidecar": recording.sidecar, "recording": True}
        now = self.clock.seconds()
        try:
            check_space(self.directory, self.min_free, self.disk_usage)
            path, file = create(self.directory, room.name, now)
        except RecordingRefused as e:
            return e.status, {"error": e.reason}
        except OSError as e:
            self.log.error("{conf}: cannot create a recording in {dir}: {e}",
                           conf=room.name, dir=self.directory, e=e)
            return 500, {"error": f"cannot create the recording file: {e.strerror or e}"}
        directory = self.directory
        recorder = Recorder(file, self.engine.rate, now, max_bytes=self.max_bytes,
                            min_free=self.min_free,
                            free=lambda: self.disk_usage(directory).free,
                            info={"conference": room.name, "uri": room.conference.uri,
                                  "recorded_by": room.services.node.uri})
        recording = self.active[room] = _Recording(recorder, path, file)
        self._members(room, recording)
        self._write_sidecar(recording)
        self.engine.tap(room, lambda frame: self._feed(room, frame))
        if self._loop is None:
            self._loop = task.LoopingCall(self._watch)
            self._loop.clock = self.clock
            self._loop.start(MEMBERS_EVERY, now=False)
        self.log.info("{conf}: recording to {path}", conf=room.name, path=path)
        return 200, self._answer(recording)

    def stop(self, room, reason="stopped by the operator"):
        recording = self.active.pop(room, None)
        if recording is None:
            return 409, {"error": "not recording", "recording": False}
        self.engine.untap(room)
        recorder = recording.recorder
        self._members(room, recording)
        try:
            recorder.stop(self.clock.seconds(), reason)
            recording.file.close()
        except OSError as e:            # the disk failed under us: the samples may be cut
            self.log.error("{conf}: closing the recording {path}: {e}", conf=room.name,
                           path=recording.path, e=e)
        self._write_sidecar(recording)
        self.log.info("{conf}: recording {path} stopped ({reason}; {s:.1f} s, {mb:.1f} MiB)",
                      conf=room.name, path=recording.path, reason=recorder.reason,
                      s=recorder.seconds, mb=recorder.written / MIB)
        if not self.active and self._loop is not None:
            if self._loop.running:
                self._loop.stop()
            self._loop = None
        return 200, self._answer(recording)

    def stop_all(self, reason):
        for room in list(self.active):
            self.stop(room, reason)

    # -- inside ------------------------------------------------------------------

    def _answer(self, recording):
        recorder = recording.recorder
        return {"file": recording.path, "sidecar": recording.sidecar,
                "recording": recorder.recording, "seconds": round(recorder.seconds, 3),
                "reason": recorder.reason if not recorder.recording else None}

    def _feed(self, room, frame):
        """One tick's mix; a bound met (free space, max_mb) stops it."""
        recording = self.active.get(room)
        if recording is None:
            return
        try:
            reason = recording.recorder.push(frame)
        except OSError as e:            # ENOSPC, EIO: stop rather than fail every tick
            reason = f"write failed: {e.strerror or e}"
        if reason is not None:
            self.log.warn("{conf}: recording stops by itself: {reason}", conf=room.name,
                          reason=reason)
            self.stop(room, reason)

    def _watch(self):
        """Each second: members of every recorded room; a retired room's
        recording ends."""
        for room, recording in list(self.active.items()):
            if room.services.rooms.get(room.name) is not room:
                self.stop(room, "the conference ended")
            else:
                self._members(room, recording)

    def _members(self, room, recording):
        view = {endpoint: (record.user, holder, record.when)
                for endpoint, (holder, record) in room.mesh.replica.members().items()}
        recording.recorder.members(view, self.clock.seconds())

    def _write_sidecar(self, recording):
        try:
            write_sidecar(recording.sidecar,
                          recording.recorder.sidecar(os.path.basename(recording.path)))
        except OSError as e:
            self.log.error("cannot write {path}: {e}", path=recording.sidecar, e=e)
