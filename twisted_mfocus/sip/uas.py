"""UAS request inspection (RFC 3261 §8.2.1–§8.2.3), sans-IO.

Every request a UAS receives passes these checks, in the RFC's order,
before the application sees it: method, Request-URI scheme, Require,
content.  The first failing check decides the response; the application
only ever handles requests it can process.  ``UASPolicy`` holds what this
UAS supports, so the same checks serve the minimal probe UAS and the
conference focus.
"""

from .ids import new_tag
from .message import KNOWN_METHODS, make_response

__all__ = ["UASPolicy", "Refused", "KNOWN_METHODS", "accepts", "allows", "listed"]


def listed(message, header, token):
    """Does the list header ``header`` (Allow, Supported, ...) of ``message``
    name ``token``, in any case (§7.3.1: the values are already split)?"""
    token = token.lower()
    return any(value.lower() == token for value in message.headers.get_all(header))


def allows(message, method):
    """Does ``message``'s Allow list ``method`` (RFC 3261 §20.5)?"""
    return listed(message, "allow", method)


def accepts(request, content_type):
    """May a response to ``request`` carry a ``content_type`` body?  Yes
    without Accept; an empty Accept takes no body (RFC 3261 §20.1); media
    ranges and ``*/*`` as in RFC 7231 §5.3.2 (parameters and q ignored)."""
    values = request.headers.get_all("accept")
    if not values:
        return True
    ranges = {v.split(";", 1)[0].strip().lower() for v in values}
    return bool(ranges & {content_type, content_type.split("/", 1)[0] + "/*", "*/*"})


class Refused(Exception):
    """A request we answer with ``status`` (and ``headers``; a new To tag
    when ``tagged``): raised where the decision is made, answered by the
    code that holds the transaction."""

    def __init__(self, status, reason=None, headers=(), tagged=False):
        super().__init__(status, reason)
        self.status, self.reason, self.headers = status, reason, list(headers)
        self.tagged = tagged

    def response(self, policy, request):
        return policy.respond(request, self.status, self.reason, headers=self.headers,
                              to_tag=new_tag() if self.tagged else None)


class UASPolicy:
    """What a UAS supports, and the §8.2 checks against it."""

    def __init__(self, allow, supported=(), accept=("application/sdp",),
                 schemes=("sip", "sips"), extra_headers=(), request_headers=None):
        self.allow = tuple(allow)
        self.supported = tuple(supported)
        self.accept = tuple(accept)
        self.schemes = frozenset(schemes)
        #: Headers put on every response (e.g. Allow-Events, Server).
        self.extra_headers = tuple(extra_headers)       # on every response
        #: on the requests we originate (User-Agent there, not Server: §20.35, §20.41)
        self.request_headers = tuple(extra_headers if request_headers is None
                                     else request_headers)

    def capability_headers(self):
        """Allow, Accept and Supported, as an OPTIONS 200 carries (§11.2)."""
        return [("Allow", ", ".join(self.allow)),
                ("Accept", ", ".join(self.accept)),
                ("Supported", ", ".join(self.supported))]

    def respond(self, request, status, reason=None, to_tag=None, headers=(), body=b""):
        """A response with this UAS's standing headers added."""
        return make_response(request, status, reason, to_tag=to_tag, body=body,
                             headers=list(self.extra_headers) + list(headers))

    def inspect(self, request, to_tag=None):
        """The response that refuses ``request``, or None if it may proceed.

        ACK is never answered (§17.1.1.3, §17.2.3), so it always proceeds.
        A refusal carries ``to_tag``, or a fresh tag (§8.2.6.2) made only
        then: an accepted request, the hot path, costs no tag.
        """
        if request.method == "ACK":
            return None
        refusal = self._refusal(request)
        if refusal is None:
            return None
        status, reason, headers = refusal
        return self.respond(request, status, reason, to_tag=to_tag or new_tag(),
                            headers=headers)

    def _refusal(self, request):
        """(status, reason, headers) of the first §8.2 check that fails."""
        # §8.2.1 Method Inspection.
        if request.method not in self.allow:
            allow = [("Allow", ", ".join(self.allow))]
            if request.method in KNOWN_METHODS:
                return 405, None, allow
            return 501, None, allow
        # §8.2.2.1 To and Request-URI: an unsupported scheme is a 416.
        if request.uri.scheme not in self.schemes:
            return 416, None, []
        # §8.2.2.3 Require: every option-tag we do not know goes back in
        # Unsupported.  Never for CANCEL, nor ACK (§8.2.2.3).
        if request.method != "CANCEL":
            required = [t.strip() for t in request.headers.get_all("require")]
            unknown = [t for t in required if t and t.lower() not in
                       {s.lower() for s in self.supported}]
            if unknown:
                return 420, None, [("Unsupported", ", ".join(unknown))]
        # §8.2.3 Content Processing: a body we cannot read is a 415 with
        # Accept (and Accept-Encoding when the encoding is the problem).
        if request.body:
            ctype = request.content_type or "application/sdp"   # §7.4.1 default
            if ctype not in self.accept:
                return 415, None, [("Accept", ", ".join(self.accept))]
            encodings = [e.strip().lower() for e in request.headers.get_all("content-encoding")]
            if any(e and e != "identity" for e in encodings):
                return 415, None, [("Accept-Encoding", "identity")]
        return None
