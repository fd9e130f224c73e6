"""An operator's action on what another focus of the conference holds,
asked of that focus (issue 20): muting a member it holds, muting or
unmuting everyone, locking the room there too, ending the conference.

SIP has no request that asks a focus to mute someone or lock a room
(RFC 4579 leaves conference policy out; a REFER's Refer-To names a
request to send), so the foci ask each other with a MESSAGE (RFC 3428
§4: a request outside any dialog, answered at once) carrying a small JSON
body of our own type, ``{"action", "member", "except"}``, as they already
forward REFERs to each other:

- It goes to ``sip:NAME@<focus id>`` with the conference URI in To, from
  us as a focus: it carries our proof (``to_focus``; trust.py), so only a
  focus of the conference may ask.  Anyone else gets 403 and learns
  nothing, whether or not the conference exists.
- The asked focus acts on what it holds only and never asks further (no
  loops): the action's answer is the MESSAGE's (200, or 400/404/409 with
  the reason phrase saying why); the asking focus logs it.
- Bounded: a body of at most ``MAX_BODY`` octets, one of ``ACTIONS``.
"""

import json

from twisted.logger import Logger

from ..sip.ids import new_tag
from ..sip.uri import URI
from ..sip.values import NameAddr
from .subscriber import out_of_dialog_request

__all__ = ["ACTIONS", "CONTENT_TYPE", "Relay", "ask"]

CONTENT_TYPE = "application/vnd.mfocus.moderation+json"
MAX_BODY = 4096
ACTIONS = ("mute", "unmute", "mute-all", "unmute-all", "lock", "unlock", "end")

log = Logger()


def ask(room, focus, action, member=None, spare=None):
    """Ask ``focus`` (an id) to do ``action`` on its part of ``room``."""
    s = room.services
    me = URI.parse(s.node.uri)
    body = json.dumps({"action": action, "member": member, "except": spare}).encode()
    headers = [("Content-Type", CONTENT_TYPE)] + list(s.policy.request_headers)
    request = out_of_dialog_request("MESSAGE", URI.parse(focus).replace(user=room.name), me,
                                    room.uri, NameAddr(me), headers)
    request.body = body

    def answered(response):
        if response.status >= 200:
            log.info("{conf}: {action} asked of {focus}: {status} {reason}", conf=room.name,
                     action=action, focus=focus, status=response.status,
                     reason=response.reason, event="moderation relayed")

    def failed(reason):
        log.info("{conf}: {action} asked of {focus}: no answer ({why})", conf=room.name,
                 action=action, focus=focus, why=reason)
    s.ua.send_request(request, answered, failed, to_focus=True).addErrback(
        lambda f: failed(f.getErrorMessage()))


class Relay:
    """Takes another focus's MESSAGE and does what it asks (``moderation``,
    moderation.Moderation, on this focus's part only)."""

    def __init__(self, moderation, rooms, trust, policy):
        self.moderation = moderation
        self.rooms = rooms
        self.trust = trust
        self.policy = policy

    def receive(self, txn, request, source):
        room = self.rooms.existing(request.uri, configured=False)
        if not self.trust.trusts(request, source, room):
            return self._answer(txn, request, 403, "Not A Trusted Focus")
        if room is None:
            return self._answer(txn, request, 404, "No Such Conference")
        if request.content_type != CONTENT_TYPE:
            return self._answer(txn, request, 415, "Unsupported Media Type",
                                [("Accept", CONTENT_TYPE)])
        body = bytes(request.body or b"")
        if len(body) > MAX_BODY:
            return self._answer(txn, request, 413, "Request Too Large")
        try:
            asked = json.loads(body)
            action = asked["action"]
            member, spare = asked.get("member"), asked.get("except")
            if action not in ACTIONS or not all(
                    v is None or isinstance(v, str) for v in (member, spare)):
                raise ValueError(action)
        except (ValueError, KeyError, TypeError):
            return self._answer(txn, request, 400, "Bad Moderation Request")
        status, answer = self._do(room.name, action, member, spare)
        if status >= 300:
            return self._answer(txn, request, status, str(answer.get("error", "Refused")))
        self._answer(txn, request, 200)

    def _do(self, name, action, member, spare):
        m = self.moderation
        if action in ("mute", "unmute"):
            return m.set_muted(name, member or "", action == "mute", relay=False)
        if action in ("mute-all", "unmute-all"):
            return m.mute_all(name, action == "mute-all", spare, relay=False)
        if action in ("lock", "unlock"):
            return m.set_locked(name, action == "lock", relay=False)
        return m.end(name, relay=False)

    def _answer(self, txn, request, status, reason=None, headers=()):
        if reason:                      # a reason phrase is one short line
            reason = reason[:100].replace("\r", " ").replace("\n", " ")
        txn.respond(self.policy.respond(request, status, reason, to_tag=new_tag(),
                                        headers=list(headers)))
