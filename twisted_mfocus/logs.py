"""Log output for ``twistd mfocus``: text (twistd's own) or JSON lines,
to stdout (the journal, under systemd) or to a bounded set of files.

twistd asks the application for an ``ILogObserver`` before it falls back
to its own text observer, so the format and the file are one component
set on the application; events are the same ``twisted.logger`` events
either way.  twistd's own ``--logfile`` keeps every rotated file it ever
made, so a long flood could fill a disk: ``[focus] log_file`` rotates at
``log_rotate_bytes`` and keeps ``log_files_kept`` old files, no more.
"""

import os
import sys

from twisted.logger import ILogObserver, jsonFileLogObserver, textFileLogObserver
from twisted.python.logfile import LogFile

__all__ = ["install_observer", "bounded_log_file"]


def bounded_log_file(path, rotate_bytes, kept):
    """A file that rotates at ``rotate_bytes`` and keeps ``kept`` old ones."""
    path = os.path.abspath(path)
    return LogFile(os.path.basename(path), os.path.dirname(path),
                   rotateLength=rotate_bytes, maxRotatedFiles=kept)


def install_observer(application, log_format, stream=None, log_file=None,
                     rotate_bytes=10_000_000, kept=5):
    """Make ``application`` log in ``log_format`` to ``log_file`` (bounded)
    or ``stream``; ``text`` to stdout leaves twistd's observer."""
    if log_file:
        stream = bounded_log_file(log_file, rotate_bytes, kept)
    elif log_format != "json":
        return
    stream = stream or sys.stdout
    if log_format == "json":
        observer = jsonFileLogObserver(stream, recordSeparator="")
    else:
        observer = textFileLogObserver(stream)
    application.setComponent(ILogObserver, observer)
