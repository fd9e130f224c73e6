"""logs.py: the text observer writes exactly what Twisted's would."""

import enum
import io

from twisted.logger import Logger, LogLevel, textFileLogObserver
from twisted.python.failure import Failure

from twisted_mfocus.logs import TextLogObserver, twistd_logs_to_stdout


class Method(enum.StrEnum):
    DIALED_IN = "dialed-in"


class Plain(enum.Enum):
    ONE = 1


def _both(event):
    """(ours, Twisted's) output for one event (each gets its own copy)."""
    ours, theirs = io.StringIO(), io.StringIO()
    TextLogObserver(ours)(dict(event))
    textFileLogObserver(theirs)(dict(event))
    return ours.getvalue(), theirs.getvalue()


def _event(fmt, when=1_700_000_000.25, **fields):
    return dict(fields, log_format=fmt, log_time=when, log_level=LogLevel.info,
                log_namespace="twisted_mfocus.focus.room.Room")


EVENTS = [
    _event("{conf}: {member} {event} ({how}, call {call})", conf="bench",
           member="sip:a@127.0.0.1:5060", event="joined", how=Method.DIALED_IN, call="1-2@h"),
    _event("{n} calls, {x!r}, {y:>6.2f}|{z!s:^9}|{a!a}", n=3, x="q", y=2.5, z=None, a="é"),
    _event("{e} and {p}", e=Plain.ONE, p=Method.DIALED_IN),
    _event("two\nlines {x}", x="and\nmore"),
    _event("braces {{literal}} {x}", x=1),
    _event("{missing}"),                                   # Unable to format event
    _event("{a.real} {b[0]} {c()}", a=1, b=[2], c=lambda: 3),  # Twisted's own syntax
    _event("{0}"),                                         # positional: unformattable
    _event("{x:{w}}", x=1, w=4),                            # nested spec
    _event("{bad", x=1),                                   # not a format
    _event(""),                                            # nothing written
    _event("no time", when=None),
    _event("whole second", when=1_700_000_000.0),
    _event("just before a second", when=1_700_000_000.9999998),
    _event("before 1970", when=-1.5),
    dict(_event("system {x}", x=1), log_system="DatagramListener (UDP)"),
    dict(_event("no level"), log_level=None),
    {"log_time": 1_700_000_000.0, "message": ("legacy",)},  # no format: nothing
    _event(b"bytes {x}", x=1),
]


def test_every_kind_of_event_comes_out_as_twisted_writes_it():
    for event in EVENTS:
        ours, theirs = _both(event)
        assert ours == theirs, event


def test_a_failure_keeps_its_traceback():
    try:
        1 / 0
    except ZeroDivisionError:
        failure = Failure()
    ours, theirs = _both(_event("it broke: {why}", why="x", log_failure=failure))
    assert ours == theirs and "ZeroDivisionError" in ours


def test_time_text_follows_the_seconds():
    out = io.StringIO()
    observer = TextLogObserver(out)
    reference = io.StringIO()
    theirs = textFileLogObserver(reference)
    for when in (100.1, 100.9, 101.0, 101.5, 99.5, 3600.2):
        observer(_event("t", when=when))
        theirs(_event("t", when=when))
    assert out.getvalue() == reference.getvalue()


def test_a_binary_stream_gets_utf8():
    ours, theirs = io.BytesIO(), io.BytesIO()
    event = _event("{who} joined", who="Zoë")
    TextLogObserver(ours)(dict(event))
    textFileLogObserver(theirs)(dict(event))
    assert ours.getvalue() == theirs.getvalue() and "Zoë".encode() in ours.getvalue()


def test_a_logger_through_the_observer():
    out = io.StringIO()
    log = Logger(namespace="mfocus.test", observer=TextLogObserver(out))
    log.info("{conf}: {member} left", conf="room", member="sip:a@b")
    assert out.getvalue().endswith(" [mfocus.test#info] room: sip:a@b left\n")


def test_stdout_is_taken_over_only_where_twistd_writes_there():
    assert twistd_logs_to_stdout({"nodaemon": True, "logfile": None})
    assert twistd_logs_to_stdout({"nodaemon": True, "logfile": "-"})
    assert not twistd_logs_to_stdout({"nodaemon": False, "logfile": None})
    assert not twistd_logs_to_stdout({"nodaemon": True, "logfile": "twistd.log"})
    assert not twistd_logs_to_stdout({"nodaemon": True, "syslog": True})
    assert not twistd_logs_to_stdout({"nodaemon": True, "logger": "a.b"})
    assert not twistd_logs_to_stdout(None)


class Turns:
    """A reactor's turns, by hand: what ``TextLogObserver`` uses of one."""

    def __init__(self):
        self.running = True
        self.soon, self.triggers = [], []

    def callLater(self, delay, f):
        assert delay == 0
        self.soon.append(f)

    def addSystemEventTrigger(self, phase, event, f):
        self.triggers.append((phase, event, f))

    def turn(self):
        soon, self.soon = self.soon, []
        for f in soon:
            f()


class Counted(io.StringIO):
    writes = flushes = 0

    def write(self, text):
        self.writes += 1
        return super().write(text)

    def flush(self):
        self.flushes += 1


def test_a_turns_lines_go_out_together_at_its_end():
    reactor, out, reference = Turns(), Counted(), io.StringIO()
    observer = TextLogObserver(out, reactor=reactor, in_io_thread=lambda: True)
    theirs = textFileLogObserver(reference)
    for n in range(3):
        observer(_event("line {n}", n=n))
        theirs(_event("line {n}", n=n))
    assert out.getvalue() == "" and len(reactor.soon) == 1
    reactor.turn()
    assert out.getvalue() == reference.getvalue()
    assert (out.writes, out.flushes) == (1, 1)


def test_warnings_and_a_stopped_reactor_write_at_once():
    reactor, out = Turns(), io.StringIO()
    observer = TextLogObserver(out, reactor=reactor, in_io_thread=lambda: True)
    observer(_event("info"))
    observer(dict(_event("careful"), log_level=LogLevel.warn))
    assert out.getvalue().splitlines()[1].endswith("careful")     # the info line first
    reactor.running = False
    observer(_event("Main loop terminated."))
    assert out.getvalue().endswith("Main loop terminated.\n")


def test_shutdown_writes_what_is_left():
    reactor, out = Turns(), io.StringIO()
    observer = TextLogObserver(out, reactor=reactor, in_io_thread=lambda: True)
    observer(_event("last words"))
    [(phase, event, flush)] = reactor.triggers
    assert (phase, event) == ("after", "shutdown")
    flush()
    assert out.getvalue().endswith("last words\n")


def test_a_rotating_file_is_written_line_by_line():
    reactor, out = Turns(), Counted()
    observer = TextLogObserver(out, reactor=reactor, rotating=True,
                               in_io_thread=lambda: True)
    observer(_event("one"))
    observer(_event("two"))
    reactor.turn()
    assert (out.writes, out.flushes) == (2, 1)


def test_another_threads_line_is_written_at_once():
    reactor, out = Turns(), io.StringIO()
    observer = TextLogObserver(out, reactor=reactor, in_io_thread=lambda: False)
    observer(_event("from a thread"))
    assert out.getvalue().endswith("from a thread\n") and not reactor.soon
