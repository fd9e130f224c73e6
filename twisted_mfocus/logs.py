"""Log output for ``twistd mfocus``: text (twistd's own) or JSON lines,
to stdout (the journal, under systemd) or to a bounded set of files.

twistd asks the application for an ``ILogObserver`` before it falls back
to its own text observer, so the format and the file are one component
set on the application; events are the same ``twisted.logger`` events
either way.  twistd's own ``--logfile`` keeps every rotated file it ever
made, so a long flood could fill a disk: ``[focus] log_file`` rotates at
``log_rotate_bytes`` and keeps ``log_files_kept`` old files, no more.

Text lines are written by ``TextLogObserver``: byte for byte what
Twisted's ``textFileLogObserver`` writes, but a call's join and leave each
write a line, and Twisted's formatting (a time zone and ``strftime`` per
line, ``string.Formatter`` over a call-wrapping mapping) was a seventh of
a join+leave (bench/join_bench.py).
"""

import os
import sys
from string import Formatter

from twisted.logger import (
    ILogObserver,
    LogLevel,
    formatEventAsClassicLogText,
    formatTime,
    jsonFileLogObserver,
    timeFormatRFC3339,
)
from twisted.python.compat import ioType
from twisted.python.logfile import LogFile
from twisted.python.threadable import isInIOThread
from zope.interface import implementer

__all__ = ["install_observer", "bounded_log_file", "TextLogObserver"]

MAX_FORMATS = 1024          # parsed format strings kept (they are the code's constants)
URGENT = frozenset((LogLevel.warn, LogLevel.error, LogLevel.critical))   # written at once
_CONVERT = {None: lambda v: v, "r": repr, "s": str, "a": ascii}


def bounded_log_file(path, rotate_bytes, kept):
    """A file that rotates at ``rotate_bytes`` and keeps ``kept`` old ones."""
    path = os.path.abspath(path)
    return LogFile(os.path.basename(path), os.path.dirname(path),
                   rotateLength=rotate_bytes, maxRotatedFiles=kept)


def install_observer(application, log_format, stream=None, log_file=None,
                     rotate_bytes=10_000_000, kept=5, stdout_is_twistds=False, reactor=None):
    """Make ``application`` log in ``log_format`` to ``log_file`` (bounded)
    or ``stream``.  Text to stdout is twistd's choice (``--logfile``,
    ``--syslog``, ``--logger``): taken over, with the same lines, only when
    ``stdout_is_twistds`` says twistd would write them to stdout itself.
    With the ``reactor``, text lines are written once per reactor turn."""
    if log_file:
        stream = bounded_log_file(log_file, rotate_bytes, kept)
    elif log_format != "json" and not stdout_is_twistds:
        return
    stream = stream or sys.stdout
    if log_format == "json":
        observer = jsonFileLogObserver(stream, recordSeparator="")
    else:
        observer = TextLogObserver(stream, reactor=reactor, rotating=bool(log_file))
    application.setComponent(ILogObserver, observer)


def twistd_logs_to_stdout(twistd_options):
    """Would twistd, with these (its own) options, write text to stdout?"""
    if twistd_options is None:
        return False
    get = twistd_options.get
    return bool(get("nodaemon")) and get("logfile") in (None, "", "-") and \
        not get("syslog") and not get("logger")


@implementer(ILogObserver)
class TextLogObserver:
    """``textFileLogObserver(stream)``'s lines, cheaper: the time text is
    made once per second, a format string parsed once, and a plain
    ``{name}``/``{name!r:spec}`` field formatted straight from the event.
    Anything else (a traceback, ``{a.b}``, ``{f()}``, a field that fails)
    goes through Twisted's own formatting, so the output never differs.

    Given the ``reactor``, the lines of one reactor turn go out together
    at its end (a write and a flush each cost a system call); warnings and
    worse, and anything while the reactor is not running (or from another
    thread), at once.
    ``rotating``: the stream rotates by size (``LogFile``), so it is
    written line by line, only flushed once per turn."""

    def __init__(self, stream, time_format=timeFormatRFC3339, reactor=None, rotating=False,
                 in_io_thread=isInIOThread):
        self._stream = stream
        self._binary = ioType(stream) is not str      # as FileLogObserver decides
        self._time_format = time_format
        self._second = None         # the whole second _stamp is the text of
        self._stamp = None
        self._formats = {}          # format string -> its parts, or None: not plain
        self._parser = Formatter()
        self._reactor = reactor
        self._rotating = rotating
        self._in_io_thread = in_io_thread
        self._pending = []          # lines of this reactor turn, not yet written
        if reactor is not None:
            reactor.addSystemEventTrigger("after", "shutdown", self.flush)

    def __call__(self, event):
        text = self._fast(event)
        if text is None:
            text = formatEventAsClassicLogText(
                event, formatTime=lambda when: formatTime(when, self._time_format))
        if not text:
            return
        data = text.encode("utf-8") if self._binary else text
        reactor = self._reactor
        if reactor is None or not reactor.running:
            self._pending.append(data)      # after what is waiting, if any
            self.flush()
            return
        if not self._in_io_thread():        # the turn's lines are the reactor's
            self._stream.write(data)
            self._stream.flush()
            return
        pending = self._pending
        pending.append(data)
        if event.get("log_level") in URGENT:
            self.flush()
        elif len(pending) == 1:
            reactor.callLater(0, self.flush)

    def flush(self):
        """Write and flush the lines not written yet."""
        pending = self._pending
        if not pending:
            return
        self._pending = []
        stream = self._stream
        if self._rotating:
            for line in pending:
                stream.write(line)
        else:
            stream.write((b"" if self._binary else "").join(pending))
        stream.flush()

    def _fast(self, event):
        """The line, or None where Twisted's formatting must make it."""
        fmt = event.get("log_format")
        if type(fmt) is not str or "log_failure" in event or "log_flattened" in event:
            return None
        parts = self._parts(fmt)
        if parts is None:
            return None
        try:
            pieces = []
            for literal, name, convert, spec in parts:
                pieces.append(literal)
                if name is not None:
                    pieces.append(format(convert(event[name]), spec))
            message = "".join(pieces)
        except Exception:
            return None             # Twisted says "Unable to format event ..."
        if not message:
            return ""
        system = event.get("log_system")
        if system is None:
            level = event.get("log_level")
            system = f"{event.get('log_namespace', '-')}#{'-' if level is None else level.name}"
        elif type(system) is not str:
            return None
        line = f"{self._time(event.get('log_time'))} [{system}] {message}"
        return line.replace("\n", "\n\t") + "\n"

    def _parts(self, fmt):
        """(literal, field name, conversion, spec) of each piece of a format
        whose fields are all plain names; None if one is not."""
        try:
            return self._formats[fmt]
        except KeyError:
            pass
        try:
            parts = tuple(self._part(*piece) for piece in self._parser.parse(fmt))
            if any(part is None for part in parts):
                parts = None
        except ValueError:
            parts = None
        if len(self._formats) >= MAX_FORMATS:
            self._formats.clear()
        self._formats[fmt] = parts
        return parts

    @staticmethod
    def _part(literal, name, spec, conversion):
        if name is None:
            return literal, None, None, None
        if not name.isidentifier() or "{" in spec or conversion not in _CONVERT:
            return None
        return literal, name, _CONVERT[conversion], spec

    def _time(self, when):
        """``formatTime(when, time_format)``, made once per whole second."""
        if type(when) is not float or not 0.0 <= when - int(when) < 0.9999995:
            return formatTime(when, self._time_format)  # None, odd, or rounded up
        second = int(when)
        if second != self._second:
            self._stamp = formatTime(second, self._time_format)
            self._second = second
        return self._stamp
