"""Log output for ``twistd mfocus``: text (twistd's own) or JSON lines.

twistd asks the application for an ``ILogObserver`` before it falls back
to its own text observer, so ``--log-format json`` is one component set on
the application; events are the same ``twisted.logger`` events either way.
"""

import sys

from twisted.logger import ILogObserver, jsonFileLogObserver

__all__ = ["install_observer"]


def install_observer(application, log_format, stream=None):
    """Make ``application`` log in ``log_format`` (``text`` leaves twistd's)."""
    if log_format == "json":
        stream = stream or sys.stdout
        application.setComponent(ILogObserver, jsonFileLogObserver(stream, recordSeparator=""))
