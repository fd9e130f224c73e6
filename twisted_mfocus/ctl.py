"""``mfocusctl``: the operator's command line over the management API.

Standard library only (argparse, urllib, json), so it runs wherever
Python does, also on a machine without Twisted.  Every command is one
HTTP request (web/api.py documents them); what it prints is made from
the API's answer: a table for people, ``--json`` the answer as it came,
for scripts.  The exit status tells a shell what happened (EXIT_* below,
also in ``--help``).

The commands are one table, ``COMMANDS``: a command is its arguments,
the request they make and how its answer is shown.  A ``planned`` one
(none at present) names the request the client will make once the
focus serves it; a focus that answers it 404 does not serve it yet.
"""

import argparse
import http.client
import json
import os
import sys
import urllib.error
import urllib.request
from collections.abc import Callable
from typing import NamedTuple
from urllib.parse import quote

__all__ = ["main"]

EXIT_OK = 0
EXIT_API = 1            # the API answered an error: 404, 409, 400...
EXIT_USAGE = 2          # argparse's own status for a bad command line
EXIT_UNREACHABLE = 3    # no answer (refused, timed out) or 401: nothing was done

DEFAULT_API = "http://127.0.0.1:8080"
NOT_SUPPORTED = "not supported by this focus yet"
#: characters left as they are in a conference name (RFC 3986 pchar): the
#: API takes the name's path step as it comes, unquoted
_NAME_SAFE = "-._~!$&'()*+,;=:@"

EPILOG = f"""\
exit status:
  {EXIT_OK}  done
  {EXIT_API}  the API refused: no such conference or member (404), a member
     held by another focus (409), a dial [focus] refer_targets forbids
     (403), a full focus (503), a bad request (400); also a planned
     command the focus does not serve yet ({NOT_SUPPORTED})
  {EXIT_USAGE}  usage: a bad command line, an unreadable token file
  {EXIT_UNREACHABLE}  the API could not be reached (refused, timed out) or
     refused the token (401): nothing was done

environment: MFOCUS_API (default for --api), MFOCUS_TOKEN_FILE (for --token-file)
"""


class Command(NamedTuple):
    """One subcommand: its help, its arguments, its request, its output."""

    help: str
    args: tuple                 # (name, argparse keywords) pairs
    #: the parsed arguments -> (method, path, JSON body or None)
    request: Callable
    #: (the parsed arguments, the API's answer) -> the text printed
    show: Callable
    planned: bool = False       # the focus may not serve it yet (404: NOT_SUPPORTED)


def _room(ns):
    return "/api/v1/conferences/" + quote(ns.room, safe=_NAME_SAFE)


def _member(ns):
    return f"{_room(ns)}/members/{quote(ns.uri, safe='')}"


ROOM = ("room", {"help": "conference name (the user part of its URI)"})
URI = ("uri", {"help": "member URI, e.g. sip:alice@example.com"})
EXCEPT = ("--except", {"dest": "spare", "metavar": "URI",
                       "help": "a member left as it is (the speaker)"})


def _table(header, rows):
    """Left-aligned columns, two spaces apart."""
    rows = [header] + [[str(c) for c in row] for row in rows]
    widths = [max(len(row[i]) for row in rows) for i in range(len(header))]
    return "\n".join("  ".join(c.ljust(w) for c, w in zip(row, widths)).rstrip()
                     for row in rows)


def _yes(value):
    return {True: "yes", False: "no", None: "-"}[value]


def _show_list(ns, body):
    if not body:
        return "no conferences"
    return _table(["NAME", "MEMBERS", "URI"],
                  [[c["name"], c["members"], c["uri"]] for c in body])


def _show_conference(ns, body):
    locked, subs = _yes(body.get("locked")), body.get("subscriptions", 0)
    title = f"conference {body['name']}  {body['uri']}  locked: {locked}  subscriptions: {subs}"
    lines = [title, ""]
    lines.append(_table(["FOCUS", "ROLE", "STATE", "MEMBERS", "CAPACITY", "EPOCH"],
                        [[f["uri"], f["role"], f["state"], f["members"], f["capacity"],
                          f.get("epoch", "-")] for f in body.get("foci", [])]))
    lines.append("")
    members = body.get("members", [])
    if members:
        lines.append(_table(
            ["MEMBER", "STATUS", "MEDIA", "MUTED", "CODEC", "FOCUS", "JOINED"],
            [[m["uri"], m["status"], m.get("media") or "-", _yes(m.get("muted")),
              m.get("codec") or "-", m["focus"], m.get("joined") or "-"] for m in members]))
    else:
        lines.append("no members")
    return "\n".join(lines)


def _show_mute_all(ns, body):
    verb = "muted" if body["muted"] else "unmuted"
    n = len(body["members"])
    text = f"{verb} {n} member{'' if n == 1 else 's'} of {body['name']}"
    if body.get("except"):
        text += f" (not {body['except']})"
    for other in body.get("elsewhere", []):
        text += f"\nheld by {other['focus']}: {other['uri']}"
    return text + _asked(body)


def _asked(body):
    """The other foci asked to do the same (relay.py), as a last line."""
    foci = body.get("forwarded_to")
    return f"\nasked {', '.join(foci)} to do the same" if foci else ""


def _show_record(ns, body):
    if body.get("recording"):
        return f"recording {ns.room} to {body['file']}\nsidecar {body['sidecar']}"
    return (f"stopped recording {ns.room}: {body['file']}\nsidecar {body['sidecar']}"
            + (f"\n{body['seconds']:g} s" if body.get("seconds") is not None else ""))


def _plural(n, word):
    return f"{n} {word}{'' if n == 1 else 's'}"


def _show_kick(ns, body):
    """Kicked here, or (202) asked of the focus holding the member."""
    if "forwarded_to" in body:
        return f"asked {body['forwarded_to']} to kick {body['uri']} from {ns.room}"
    return f"kicked {body['uri']} from {ns.room} ({_plural(body['calls'], 'call')})"


COMMANDS = {
    "list": Command(
        "the conferences of this focus", (),
        lambda ns: ("GET", "/api/v1/conferences", None), _show_list),
    "show": Command(
        "one conference: its foci and members", (ROOM,),
        lambda ns: ("GET", _room(ns), None), _show_conference),
    "kick": Command(
        "end a member's call (BYE)", (ROOM, URI),
        lambda ns: ("POST", _member(ns) + "/kick", None), _show_kick),
    "mute": Command(
        "keep a member's voice out of the mix", (ROOM, URI),
        lambda ns: ("POST", _member(ns) + "/mute", None),
        lambda ns, b: (f"asked {b['forwarded_to']} to mute {b['uri']}" if "forwarded_to" in b
                       else f"muted {b['uri']} in {ns.room}")),
    "unmute": Command(
        "put a member's voice back in the mix", (ROOM, URI),
        lambda ns: ("POST", _member(ns) + "/unmute", None),
        lambda ns, b: (f"asked {b['forwarded_to']} to unmute {b['uri']}"
                       if "forwarded_to" in b else f"unmuted {b['uri']} in {ns.room}")),
    "mute-all": Command(
        "mute every member (but one); other foci are asked to", (ROOM, EXCEPT),
        lambda ns: ("POST", _room(ns) + "/mute-all", {"except": ns.spare}), _show_mute_all),
    "unmute-all": Command(
        "unmute every member (but one); other foci are asked to", (ROOM, EXCEPT),
        lambda ns: ("POST", _room(ns) + "/unmute-all", {"except": ns.spare}),
        _show_mute_all),
    "lock": Command(
        "refuse new callers (403 Conference Locked); members stay", (ROOM,),
        lambda ns: ("POST", _room(ns) + "/lock", None),
        lambda ns, b: f"{b['name']} locked" + _asked(b)),
    "unlock": Command(
        "admit new callers again", (ROOM,),
        lambda ns: ("POST", _room(ns) + "/unlock", None),
        lambda ns, b: f"{b['name']} unlocked" + _asked(b)),
    "end": Command(
        "end the conference: BYE to every call, final NOTIFY to every subscriber", (ROOM,),
        lambda ns: ("POST", _room(ns) + "/end", None),
        lambda ns, b: f"ended {b['name']}: {_plural(b['calls'], 'call')}, "
                      f"{_plural(b['subscriptions'], 'subscription')}" + _asked(b)),
    "leave": Command(
        "this focus leaves (as SIGTERM: members handed over, then it exits)", (),
        lambda ns: ("POST", "/api/v1/leave", None), lambda ns, b: "the focus is leaving"),
    "dial": Command(
        "dial URI into the conference (as a member's REFER; [focus] refer_targets)",
        (ROOM, ("uri", {"help": "whom to dial, e.g. sip:carol@example.com"})),
        lambda ns: ("POST", _room(ns) + "/dial", {"uri": ns.uri}),
        lambda ns, b: f"dialling {b['uri']} into {ns.room}"
                      + (" through a focus with room" if b.get("forwarded") else "")),
    "record": Command(
        "start or stop recording the conference's mix (a WAV file and a JSON "
        "sidecar in the focus's [recording] directory)",
        (ROOM, ("action", {"choices": ("start", "stop"), "help": "start or stop"})),
        lambda ns: ("POST", _room(ns) + "/record", {"action": ns.action}), _show_record),
}


def parser():
    p = argparse.ArgumentParser(
        prog="mfocusctl", description="Operate an mfocus focus through its management API.",
        epilog=EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--api", default=os.environ.get("MFOCUS_API", DEFAULT_API),
                   help=f"the API's base URL (default: $MFOCUS_API or {DEFAULT_API})")
    p.add_argument("--token-file", default=os.environ.get("MFOCUS_TOKEN_FILE"),
                   help="the file of the API's bearer token ([http] token_file)")
    p.add_argument("--json", action="store_true",
                   help="print the API's JSON answer instead of a table")
    p.add_argument("--timeout", type=float, default=10.0, help="seconds to wait for the API")
    sub = p.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for name, command in COMMANDS.items():
        cp = sub.add_parser(name, help=command.help, description=command.help)
        for arg, kwargs in command.args:
            cp.add_argument(arg, **kwargs)
    return p


class Unreachable(Exception):
    """No answer from the API."""


def call(api, method, path, body=None, token=None, timeout=10.0):
    """(status, JSON answer or None) of one request; Unreachable."""
    headers = {"Accept": "application/json"}
    data = None
    if method == "POST":        # the API takes only JSON posts (415 otherwise)
        headers["Content-Type"] = "application/json"
        data = json.dumps({k: v for k, v in (body or {}).items() if v is not None}).encode()
    if token is not None:
        headers["Authorization"] = f"Bearer {token}"
    request = urllib.request.Request(api.rstrip("/") + path, data=data, headers=headers,
                                     method=method)
    try:
        with urllib.request.urlopen(request, timeout=timeout) as answer:
            status, raw = answer.status, answer.read()
    except urllib.error.HTTPError as e:
        status, raw = e.code, e.read()
    except (urllib.error.URLError, OSError, http.client.HTTPException) as e:
        reason = e.reason if isinstance(e, urllib.error.URLError) else e
        raise Unreachable(str(reason) or type(e).__name__) from e
    try:
        return status, json.loads(raw) if raw else None
    except ValueError:
        return status, None


def _read_token(path):
    with open(path, encoding="ascii") as f:
        return f.read().strip()


def _error_text(body, status):
    """What went wrong, from an error answer."""
    if not isinstance(body, dict):
        return f"HTTP {status}"
    text = body.get("error") or f"HTTP {status}"
    if body.get("focus"):
        text += f": {body['focus']}"
    if body.get("foci"):
        text += ": " + ", ".join(body["foci"])
    if body.get("reason"):          # e.g. a dial refer_targets refuses
        text += f": {body['reason']}"
    return text


def main(argv=None):
    """Run one command; its exit status (EXIT_*): the console script
    ``mfocusctl`` (setup.cfg) exits with it."""
    p = parser()
    ns = p.parse_args(argv)
    if not ns.api.startswith(("http://", "https://")):
        p.error(f"--api {ns.api}: not an http:// or https:// URL")      # exits 2
    command = COMMANDS[ns.command]
    name = ns.command

    def fail(code, message, body=None):
        if ns.json:
            print(json.dumps(body if body is not None else {"error": message}, indent=1))
        print(f"mfocusctl: {name}: {message}", file=sys.stderr)
        return code
    token = None
    if ns.token_file:
        try:
            token = _read_token(ns.token_file)
        except (OSError, UnicodeDecodeError) as e:
            return fail(EXIT_USAGE, f"cannot read the token file {ns.token_file}: {e}")
    method, path, body = command.request(ns)
    try:
        status, answer = call(ns.api, method, path, body, token, ns.timeout)
    except Unreachable as e:
        return fail(EXIT_UNREACHABLE, f"cannot reach the API at {ns.api}: {e}")
    if status == 401:
        return fail(EXIT_UNREACHABLE, "the API refused the token (401): "
                    + ("a wrong token?" if token else "give --token-file"), answer)
    if status == 404 and command.planned:
        return fail(EXIT_API, NOT_SUPPORTED, answer)
    if not 200 <= status < 300:
        return fail(EXIT_API, _error_text(answer, status), answer)
    print(json.dumps(answer, indent=1) if ns.json else command.show(ns, answer))
    return EXIT_OK


if __name__ == "__main__":          # python -m twisted_mfocus.ctl
    sys.exit(main())
