"""Who is calling: digest authentication of requests (RFC 3261 §22).

The focus asks for credentials where a decision needs an identity: an
agent's REGISTER for a served user and a served user's own calls, a call
into a room with a member list, a REFER from outside any call.  Identity
is only ever the user a valid digest proves, never a From header nor a
source address.

Rules of this module:

- The credentials are the ``[auth] users_file`` (htdigest: HA1 only, never
  a password); the realm is ``[auth] realm``, else the host of the focus's
  domain.
- A UAS challenges with 401 and WWW-Authenticate; an agent relaying a
  served user's call acts as a proxy would and challenges with 407 and
  Proxy-Authenticate (§22.1, §22.3).  An expired nonce is challenged again
  with ``stale=true`` (RFC 7616 §3.3), which phones follow silently.
- A source that keeps failing is answered 403 for a while
  (``FailureLimiter``); each failure is logged once, with the source.
"""

from twisted.logger import Logger

from ..sip.auth import (
    DigestAuthenticator,
    FailureLimiter,
    Outcome,
    header_names,
    load_users,
)
from ..sip.ids import new_tag

__all__ = ["Authentication", "default_realm"]

UNAUTHORIZED, PROXY_AUTH = 401, 407


def default_realm(host):
    """The host of our domain: a realm may not hold ':' (the htdigest
    users file separates its fields with it); "mfocus" if it would."""
    return "mfocus" if ":" in host else host


class Authentication:
    """Digest challenges and checks for this focus (one realm)."""

    log = Logger()

    def __init__(self, config, node, clock, policy):
        self.config = config          # its users file was checked at start (config.py)
        self.node = node
        self.clock = clock
        self.policy = policy
        self.limiter = FailureLimiter(clock)
        self._digest = None
        #: metrics.Metrics, set at wiring time: failures are counted here,
        #: where a refused digest is answered
        self.metrics = None

    @property
    def available(self):
        """Are there credentials to check (``[auth] users_file``)?"""
        return self.config.auth_users_file is not None

    @property
    def digest(self):
        """The authenticator, made on first use: the default realm is our
        domain, known once we listen."""
        if self._digest is None:
            realm = self.config.auth_realm or default_realm(self.node.domain_host)
            users = load_users(self.config.auth_users_file, realm) if self.available else {}
            self._digest = DigestAuthenticator(
                users, realm, self.clock, algorithms=self.config.auth_algorithms,
                nonce_lifetime=self.config.auth_nonce_lifetime)
        return self._digest

    def identity_of(self, request):
        """The user whose valid digest ``request`` carries, or None; nothing
        is answered (for a decision a digest may widen, never one it gates)."""
        values = request.headers.get_all("authorization")
        if not values or not self.available:
            return None
        verdict = self.digest.check(request.method, values, request.uri_text)
        return verdict.username if verdict.ok else None

    def identify(self, txn, request, source, status=UNAUTHORIZED):
        """The user whose valid digest ``request`` carries; None after
        answering it (a challenge, or 403 for a source that keeps failing)."""
        policy = self.policy
        key = source.host
        if self.limiter.banned(key):
            txn.respond(policy.respond(request, 403, "Too Many Authentication Failures",
                                       to_tag=new_tag()))
            return None
        challenge_name, credentials_name = header_names(status)
        values = request.headers.get_all(credentials_name.lower())
        verdict = self.digest.check(request.method, values, request.uri_text)
        if verdict.ok:
            return verdict.username
        if verdict.outcome is Outcome.REFUSED:
            self.log.info("authentication of {method} from {peer} refused: {why}",
                          method=request.method, peer=str(source), why=verdict.reason,
                          event="auth-failed")
            if self.metrics is not None:
                self.metrics.auth_failures.inc()
            if self.limiter.failed(key):
                txn.respond(policy.respond(request, 403, "Too Many Authentication Failures",
                                           to_tag=new_tag()))
                return None
        stale = verdict.outcome is Outcome.STALE
        reason = "Unauthorized" if status == UNAUTHORIZED else "Proxy Authentication Required"
        txn.respond(policy.respond(request, status, reason, to_tag=new_tag(),
                                   headers=self.digest.challenge_headers(status, stale)))
        return None
