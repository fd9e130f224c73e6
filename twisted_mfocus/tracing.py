"""State tracing, off unless ``MFOCUS_TRACE=1`` is in the environment.

Each state machine (a call leg, a subscriber, a transaction, a focus's
role in a conference) changes state in one method; with tracing on, that
method logs the change at debug level.  Off, it costs one test of
``TRACE``: the hot paths stay as fast as without it.
"""

import os

__all__ = ["TRACE"]

TRACE = os.environ.get("MFOCUS_TRACE", "") not in ("", "0")
