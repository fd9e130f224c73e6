"""Session timers (RFC 4028) for one call, sans-IO.

A call whose phone died without BYE would otherwise live for ever.  With
session timers one side, the *refresher*, repeats a re-INVITE or UPDATE
every half interval; the other ends the call when no refresh came.

- ``negotiate`` decides, for an INVITE or UPDATE we answer, the interval
  and the refresher (§9): a Session-Expires below our Min-SE is 422 with
  Min-SE; the interval is the one asked (at most ours) and never below
  either side's Min-SE; the refresher is the one asked, else the phone
  when it supports timers (it refreshes, we watch), else us.  A phone that
  supports timers but asked for none gets ours (``[sip] session_expires``).
- ``for_answer`` reads a 2xx to our own INVITE (§7.2): its Session-Expires
  says who refreshes.
- ``SessionTimer`` runs one: the refresher is asked to refresh at half the
  interval (§10); a watcher ends the call at interval - min(32, interval/3)
  without a refresh.  Time is the injected clock.
"""

import enum
from typing import NamedTuple

from ..sip.uas import Refused, listed

__all__ = ["Refresher", "Session", "SessionTimer", "negotiate", "for_answer",
           "response_headers", "TIMER"]

TIMER = "timer"                 # the option tag (§4)
MIN_MIN_SE = 90                 # §4: Min-SE is never below 90 s


class Refresher(enum.StrEnum):
    UAC = "uac"
    UAS = "uas"


class Session(NamedTuple):
    """A negotiated session timer: its interval, and whether we refresh."""

    interval: int
    refresher: Refresher
    ours: bool                  # we are the refresher

    def header(self):
        return f"{self.interval};refresher={self.refresher.value}"


def _delta(value, name):
    """The delta-seconds of a Session-Expires or Min-SE value, and its params."""
    number, *params = [p.strip() for p in value.split(";")]
    if not number.isdigit() or len(number) > 10:
        raise Refused(400, f"Bad {name} header")
    return int(number), dict(p.partition("=")[::2] for p in params)


def negotiate(request, min_se, preferred):
    """The session timer for our 2xx to ``request`` (None: none), or
    ``Refused`` (422 with our Min-SE, 400 for a header that does not parse).
    ``min_se`` and ``preferred`` (0: ask for none) are ours, in seconds."""
    value = request.headers.get("session-expires")     # compact "x" too
    theirs_min = min_se
    if request.headers.get("min-se"):
        theirs_min = max(min_se, _delta(request.headers.get("min-se"), "Min-SE")[0])
    supports = listed(request, "supported", TIMER)
    if value is None:
        if not (supports and preferred):        # §9: only a phone that supports it
            return None
        interval, asked = max(preferred, theirs_min), None
    else:
        interval, params = _delta(value, "Session-Expires")
        if interval < min_se:                   # §9: too small for us
            raise Refused(422, "Session Interval Too Small",
                          [("Min-SE", str(min_se))], tagged=True)
        if preferred:
            interval = max(min(interval, preferred), theirs_min)
        asked = (params.get("refresher") or "").lower() or None
    if asked == Refresher.UAS or not supports:  # §9: a phone without it cannot
        refresher = Refresher.UAS
    else:
        refresher = Refresher.UAC
    return Session(interval, refresher, ours=refresher is Refresher.UAS)


def for_answer(response):
    """The session timer a 2xx to our INVITE sets up (§7.2), or None; we
    sent the INVITE, so ``uac`` is us."""
    value = response.headers.get("session-expires")
    if value is None:
        return None
    try:
        interval, params = _delta(value, "Session-Expires")
    except Refused:
        return None
    interval = max(interval, MIN_MIN_SE)
    refresher = Refresher.UAS if (params.get("refresher") or "").lower() == "uas" \
        else Refresher.UAC
    return Session(interval, refresher, ours=refresher is Refresher.UAC)


def response_headers(session):
    """What our 2xx says of ``session`` (§9): Session-Expires, and Require:
    timer when the phone refreshes (it must know it has to)."""
    if session is None:
        return []
    headers = [("Session-Expires", session.header())]
    if session.refresher is Refresher.UAC:
        headers.append(("Require", TIMER))
    return headers


class SessionTimer:
    """The timer of one call.  ``send_refresh(headers, on_final)`` sends a
    refresh (re-INVITE or UPDATE) with ``headers`` and calls
    ``on_final(status, response)`` (None, None: it failed);
    ``expired(session)`` ends the call (no refresh came, or ours failed)."""

    def __init__(self, clock, send_refresh, expired):
        self.clock = clock
        self._send_refresh, self._expired = send_refresh, expired
        self.session = None
        self._call = None

    def start(self, session):
        """(Re)start for ``session`` (None stops): a refresh just happened."""
        self.stop()
        self.session = session
        if session is None or self._expired is None:    # none, or closed for good
            return
        if session.ours:
            self._call = self.clock.callLater(session.interval / 2, self._due)
        else:
            wait = session.interval - min(32, session.interval / 3)
            self._call = self.clock.callLater(wait, self._lapsed)

    def stop(self):
        if self._call is not None and self._call.active():
            self._call.cancel()
        self._call = None

    def close(self):
        """Stopped for good: the call is over.  Its callbacks are dropped, so
        the call and its timer (which hold each other) die without waiting
        for the cyclic collector."""
        self.stop()
        self._send_refresh = self._expired = None

    def _due(self):
        self._call = None
        self._refresh(self.session)

    def _refresh(self, session, min_se=None):
        """Our turn (§10), refresher=uac: we go on refreshing.  A 2xx
        restarts the timer from what it says (§7.2); 422 is tried once more
        with its Min-SE (§7.4); 408, 481 or no answer: the session is gone
        (§10); anything else (491): again after half an interval."""
        interval = max(session.interval, min_se or 0)

        def on_final(status, response):
            if self._expired is None:           # the call ended meanwhile
                return
            if status is not None and 200 <= status < 300:
                self.start(for_answer(response))
            elif status == 422 and min_se is None and response.headers.get("min-se"):
                wanted = response.headers.get("min-se").split(";")[0].strip()
                if wanted.isdigit() and int(wanted) <= 86400:
                    self._refresh(session, int(wanted))
                else:
                    self._expired(session)
            elif status in (None, 408, 481):
                self._expired(session)
            else:
                self.start(session)
        self._send_refresh([("Session-Expires", f"{interval};refresher=uac")], on_final)

    def _lapsed(self):
        self._call = None
        self._expired(self.session)
