"""The conference focus: the transaction user of ``twistd mfocus``.

RFC 4579 conferencing for user agents on top of the UA core: conference
URIs (``sip:ROOM@focus`` joins ROOM, created on first use; the factory
URI makes a new one), call legs, REFER, and the RFC 4575 conference event
package on the RFC 6665 notifier.

Rules of this module:

- It decides, the pieces act: ``CallLeg`` runs a call, ``Notifier`` runs
  subscriptions, ``handle_refer`` runs a REFER; this class routes requests
  to them (§8.2 checks first, then dialog or conference) and keeps the
  conference registry in step with the legs.
- Every response carries Allow, Allow-Events and Supported; every Contact
  we send is a conference URI with ``isfocus`` (RFC 4579 §4).
- Every size is bounded: conferences, members per focus (``capacity``),
  subscriptions, dialogs.
"""

import time

from twisted.internet import defer
from twisted.logger import Logger

from ..conference import info
from ..conference.model import Conference
from ..media.rtp import PortsExhausted
from ..media.sdp import SDPError
from ..sip.dialog import DialogError, pop_own_route, strict_route_fixup
from ..sip.ids import new_tag
from ..sip.uas import UASPolicy
from ..sip.uri import URI
from ..sip.values import NameAddr
from ..conference import multifocus
from .call import CallLeg, aor, parse_offer
from .agent import Agent
from .audio import Audio
from .cascade import MARKER as CASCADE, Cascades
from .delegation import Delegator
from .mesh import Mesh, MultifocusPackage, focus_id
from .refer import handle_refer
from .registrar import Registrar
from .subscriptions import Notifier
from .ua import UserAgent

__all__ = ["ConferenceFocus", "ConferencePackage"]


ALLOW = ("INVITE", "ACK", "CANCEL", "BYE", "OPTIONS", "SUBSCRIBE", "NOTIFY",
         "REFER", "INFO")
SUPPORTED = ("replaces", "norefersub")
ACCEPT = ("application/sdp", "message/sipfrag", multifocus.CONTENT_TYPE)


class ConferencePackage:
    """The RFC 4575 ``conference`` event package for the ``Notifier``."""

    event = "conference"
    content_type = info.CONTENT_TYPE

    def __init__(self, focus):
        self.focus = focus

    def resource(self, request, source):
        return self.focus.conference_for(request.uri)

    def state(self, conference):
        return info.render_full(conference)

    def changes(self, conference):
        changes = conference.take_changes()
        return info.render_partial(conference, changes) if changes else None


class ConferenceFocus:
    """Routes requests to legs, subscriptions and REFERs; owns conferences."""

    log = Logger()

    def __init__(self, config, rtp_pool, clock=None):
        self.config = config
        self.rtp_pool = rtp_pool
        self.clock = clock
        allow = ALLOW + (("REGISTER",) if config.role == "agent" else ())
        self.policy = UASPolicy(
            allow=allow, supported=SUPPORTED, accept=ACCEPT,
            extra_headers=[("Allow", ", ".join(allow)),
                           ("Allow-Events", f"conference, refer, {multifocus.EVENT}"),
                           ("Supported", ", ".join(SUPPORTED)),
                           ("Server", "mfocus")])
        self.conferences = {}       # name -> Conference
        self.legs = {}              # Conference -> [CallLeg]
        self.ua = None
        self.notifier = None
        self.package = ConferencePackage(self)
        self.mf_package = MultifocusPackage(self)
        self.meshes = {}            # Conference -> Mesh
        self.delegator = Delegator(self)
        #: the trusted foci of the config, as (focus id, URI to SUBSCRIBE)
        self.peers = [(focus_id(uri), uri) for uri in config.peers]
        self.stopping = False
        self.audio = Audio(self)    # the calls' audio (audio.py)
        self.cascades = Cascades(self)
        self.agent = Agent(self, config) if config.role == "agent" else None
        #: registrar.py: bindings of our conference URIs, with multifocus.registrar
        self.registrar = Registrar(self, config.registrar) if config.registrar else None

    def attach(self, service):
        """Called once the transports and transactions exist."""
        self.clock = service.reactor
        self.audio.attach(self.clock)
        self.ua = UserAgent(service.reactor, service.transport, service.transactions)
        cfg = self.config
        self.notifier = Notifier(
            self.ua, self.policy, self.contact, [self.package, self.mf_package],
            min_interval=cfg.notify_interval, min_expires=cfg.min_expires,
            max_expires=cfg.max_expires, max_subscriptions=cfg.max_subscriptions,
            on_unwatched=self._maybe_retire)

    new_tag = staticmethod(new_tag)

    # -- addressing --------------------------------------------------------

    @property
    def domain(self):
        if self.config.domain:
            return self.config.domain
        host, port = self.ua.local_hostport("UDP")
        host = f"[{host}]" if ":" in host else host
        return f"{host}:{port}"

    @property
    def media_address(self):
        return self.rtp_pool.interface

    @property
    def uri(self):
        """This focus's id among foci (the API's ``focus`` of each member):
        ``sip:host:port`` of its UDP listener, whatever the domain."""
        host, port = self.ua.local_hostport("UDP")
        return focus_id(URI("sip", host=host, port=port))

    def conference_name_addr(self, conference):
        return NameAddr(URI.parse(conference.uri))

    def conference_uri(self, conference):
        return URI.parse(conference.uri)

    def contact(self, conference, transport="UDP"):
        """Our Contact for ``conference``: its URI at our address over
        ``transport``, with ``isfocus`` (RFC 4579 §4)."""
        uri = self.ua.local_uri(conference.name, transport.upper())
        return NameAddr(uri, params={"isfocus": None})

    def conference_for(self, uri, create=True):
        """The conference a Request-URI names, created on first use; the
        factory URI makes a new one (RFC 4579 §5.1); None if it names none."""
        name = uri.user if uri.is_sip else None
        if not name:
            return None
        if self.config.role == "secondary":     # holds no conference URI of its own
            return self.conferences.get(name)
        if name == self.config.factory_user:
            if not create:
                return None
            name = "conf-" + new_tag()
        conference = self.conferences.get(name)
        if conference is None and create:
            conference = self.new_conference(name)
        return conference

    def _add_conference(self, name, uri):
        conference = Conference(name, uri, max_users=self.config.max_conference_members)
        self.conferences[name] = conference
        self.legs[conference] = []
        self.log.info("conference {name} created ({uri})", name=name, uri=uri)
        return conference

    def conference_for_focus(self, request):
        """The conference a focus's multifocus SUBSCRIBE names (its To is
        the conference URI): ours, or a new replica of one held elsewhere."""
        uri = request.to.uri
        name = uri.user if uri.is_sip else None
        if not name:
            return None
        conference = self.conferences.get(name)
        if conference is None and len(self.conferences) < self.config.max_conferences:
            conference = self._add_conference(name, str(uri.replace(params={}, headers=[])))
        return conference

    def mesh_of(self, conference):
        mesh = self.meshes.get(conference)
        if mesh is None:
            mesh = self.meshes[conference] = Mesh(self, conference)
        return mesh

    def trusts(self, source):
        """Is ``source`` a focus we may take forwarded REFERs and multifocus
        SUBSCRIBEs from: a configured peer, or a focus of a conference we
        share?  (Datagrams come from the sender's listening port; stream
        connections from any port, so those match on the host.)"""
        def match(focus):               # a focus id: sip:HOST:PORT
            host, _, port = focus.partition(":")[2].rpartition(":")
            return host.strip("[]") == source.host and (
                source.reliable or int(port) == source.port)
        if any(match(uri) for uri, _ in self.peers):
            return True
        return any(match(f.uri) for mesh in self.meshes.values()
                   for f in mesh.replica.foci()) or any(
            match(uri) for mesh in self.meshes.values() for uri in mesh.links)

    # -- members ---------------------------------------------------------

    @property
    def load(self):
        """Calls held, not counting calls already handed to another focus
        (they only wait for the phone, or ``handover_grace``, to end)."""
        return sum(len(legs) for legs in self.legs.values()) - self.handed_off

    handed_off = 0

    def handed_off_leg(self, leg):
        """Another focus holds ``leg``'s member now: its place is free (and
        its voice is mixed there)."""
        if leg.state == "confirmed" and not leg.handed_off:
            leg.handed_off = True
            self.handed_off += 1
            self.audio.mix(leg)

    def is_full(self):
        return self.load >= self.config.capacity

    def can_overflow(self, conference):
        """May a newcomer be accepted beyond capacity, to be handed over?"""
        return self.load < self.config.capacity + self.config.overflow and \
            self.mesh_of(conference).can_place()

    def is_member(self, conference, name_addr):
        return aor(name_addr.uri) in conference.users

    def legs_of(self, conference, uri):
        """The legs of member ``uri`` (its user or endpoint URI)."""
        bare = uri.replace(params={k: v for k, v in uri.params.items() if k != "method"},
                           headers=[])
        text, user = str(bare), aor(bare)
        return [leg for leg in self.legs.get(conference, ()) if leg.state != "ended" and
                (leg.user_entity == user or leg.endpoint_entity == text)]

    def legs_of_device(self, conference, leg):
        """Our other confirmed calls with ``leg``'s member at the same Contact."""
        target = str(leg.dialog.remote_target)
        return [other for other in self.legs.get(conference, ())
                if other is not leg and other.state == "confirmed" and not other.handed_off
                and other.user_entity == leg.user_entity
                and str(other.dialog.remote_target) == target]

    def holder_of(self, conference, uri):
        """The focus holding member ``uri`` (user or endpoint), or None."""
        for holder, record in self.mesh_of(conference).replica.members().values():
            if uri in (record.user, record.endpoint):
                return holder
        return None

    def leg_joined(self, leg):
        if leg.peer is not None:                # a cascade leg: audio only
            self.log.info("{conf}: cascade with {peer} up ({codec})", conf=leg.conference.name,
                          peer=leg.peer, codec=leg.negotiated and leg.negotiated.codec,
                          event="cascade")
            self.audio.mix(leg)
            return
        conference = leg.conference
        leg.joined_at = time.time()
        mesh = self.mesh_of(conference)
        if leg.replacing_call_id:               # a handover: the same member
            for holder, record in mesh.replica.members().values():
                if record.call_id == leg.replacing_call_id:
                    leg.user_entity = record.user
                    leg.joining_method = record.joining_method
                    leg.epoch = max(leg.epoch, record.epoch + 1)
                    break
        if leg.replacing_call_id:
            # A call that replaces another (RFC 3891) leaves one call per
            # device: one we already have with that device goes (a takeover
            # and a handover of one member can cross).
            for other in self.legs_of_device(conference, leg):
                other.hangup()
        entity = leg.endpoint_entity
        known = mesh.replica.member(entity)
        if mesh.replica.holds(self.uri, entity) or (known and known[1].user != leg.user_entity):
            # The same Contact twice here, or another member's Contact
            # (phones behind NAT share private addresses): one key per call.
            entity = f"{entity};leg={leg.dialog.local_tag}"
            leg.endpoint_entity = entity
        if leg.user_entity not in conference.users and \
                conference.user_count >= conference.max_users:
            self.log.info("{conf}: full, dropping {member}", conf=conference.name,
                          member=leg.user_entity)
            leg.hangup()
            return
        self.log.info("{conf}: {member} {event} ({how}, call {call})", event="joined",
                      conf=conference.name, member=leg.user_entity, how=leg.joining_method,
                      call=leg.call_id)
        self.audio.mix(leg)
        mesh.member_joined(leg)
        if self.agent is not None:
            self.agent.joined(conference, leg)
        if leg.provisional:
            self.delegator.hand_over(leg)

    def leg_changed(self, leg):
        self.log.info("{conf}: {member} {event} {status}", event="media",
                      conf=leg.conference.name, member=leg.user_entity,
                      status=leg.media_status, call=leg.call_id)
        self.audio.mix(leg)
        if leg.peer is None:
            self.mesh_of(leg.conference).member_changed(leg)

    def leg_ended(self, leg, why, was_member):
        conference = leg.conference
        if leg.peer is not None:
            self.cascades.ended(leg)
            self.audio.mix(leg)
            self.rtp_pool.release(leg.rtp)
            return
        legs = self.legs.get(conference, [])
        if leg in legs:
            legs.remove(leg)
            if leg.handed_off:
                self.handed_off -= 1
        self.audio.mix(leg)                          # out of the mix (it ended)
        self.rtp_pool.release(leg.rtp)
        if was_member:
            self.log.info("{conf}: {member} {event} ({why}, call {call})", event="left",
                          conf=conference.name, member=leg.user_entity, why=why,
                          call=leg.call_id)
            self.mesh_of(conference).member_left(leg)
        if self.agent is not None:
            self.agent.ended(conference, leg)
        self._maybe_retire(conference)

    def _maybe_retire(self, conference):
        """Forget an empty conference nobody watches (bounds the registry)."""
        mesh = self.meshes.get(conference)
        if self.legs.get(conference) or conference.user_count or \
                self.notifier.watched(conference) or self.stopping or \
                (mesh is not None and mesh.links):
            return
        self.conferences.pop(conference.name, None)
        self.legs.pop(conference, None)
        self.meshes.pop(conference, None)
        if self.registrar is not None:
            self.registrar.unregister(conference)

    def new_conference(self, name):
        """A conference made here, with its URI bound at the registrar if
        there is one (registrar.py); None past max_conferences or taken."""
        if len(self.conferences) >= self.config.max_conferences or name in self.conferences:
            return None
        conference = self._add_conference(name, f"sip:{name}@{self.domain}")
        if self.registrar is not None:      # the conference URI reaches us
            self.registrar.register(conference)
        return conference

    def _ours(self, uri):
        """Does ``uri`` name this focus (a listener, or the configured domain)?"""
        hostport = uri.host + (f":{uri.port}" if uri.port else "")
        return self.ua.is_local(uri) or hostport == self.domain

    def new_leg(self, conference, transport):
        """A call leg of ``conference`` with an RTP pair (PortsExhausted)."""
        rtp = self.rtp_pool.allocate()
        leg = CallLeg(self, conference, rtp, transport)
        self.legs[conference].append(leg)
        return leg

    def dial_out(self, conference, target, referred_by, report, replaces=None, adopt=None,
                 to=None):
        """Dial ``target`` into ``conference`` (REFER, RFC 4579 §5.5).

        With ``replaces`` (a handover) the INVITE carries it (RFC 3891); a
        phone that refuses it is invited again without (the old focus then
        ends the first call with BYE).  ``adopt``: the MemberRecord of the
        member this call takes over (failover): its identity, and its
        ownership epoch + 1.  ``to``: the To header (the member's identity,
        from a handover REFER), else the target."""
        try:
            leg = self.new_leg(conference, (target.transport or "udp").upper())
        except PortsExhausted:
            report(503, "Service Unavailable")
            return None

        def without_replaces_on_refusal(status, reason):
            if status >= 300 and status not in (486, 600, 603) and not self.stopping:
                self.log.info("{target} refused Replaces ({status}): inviting without",
                              target=str(target), status=status)
                self.dial_out(conference, target, referred_by, report, adopt=adopt, to=to)
            else:
                report(status, reason)
        if replaces:
            leg.replacing_call_id = replaces.split(";", 1)[0].strip()
        leg.dial(target, referred_by, without_replaces_on_refusal if replaces else report,
                 replaces=replaces, to=to)
        if adopt is not None:
            leg.user_entity, leg.joining_method = adopt.user, adopt.joining_method
            leg.epoch = adopt.epoch + 1
        return leg

    def became_primary(self, conference, predecessor):
        """We succeed a failed primary: new requests to the conference URI
        must reach us (registrar.py)."""
        if self.registrar is not None:
            self.registrar.take_over(conference, predecessor)

    def remove_legs(self, legs, report):
        """End ``legs`` with BYE; report when the first BYE is answered (a
        stale leg of a vanished phone would make the referrer wait 32 s)."""
        ds = [leg.hangup() for leg in legs]
        defer.DeferredList(ds, fireOnOneCallback=True).addBoth(lambda _: report(200, "OK"))

    def refer(self, txn, request, source, conference, leg=None):
        handle_refer(self, txn, request, source, conference, leg)

    # -- the transaction user ----------------------------------------------

    def request_received(self, txn, request, source):
        policy = self.policy
        refusal = policy.inspect(request)
        if refusal is not None:
            txn.respond(refusal)
            return
        strict_route_fixup(request, self.ua.is_local)   # §16.4
        pop_own_route(request, self.ua.is_local)
        if request.to.tag:
            usage = self.ua.find_dialog(request)
            if usage is None:
                txn.respond(policy.respond(request, 481))
            else:
                usage.request_received(txn, request, source)
            return
        if self.stopping and request.method in ("INVITE", "SUBSCRIBE", "REFER"):
            txn.respond(policy.respond(request, 503, "Shutting Down", to_tag=new_tag(),
                                       headers=[("Retry-After", "30")]))
            return
        handler = getattr(self, "_out_of_dialog_" + request.method, None)
        if handler is None:     # BYE, NOTIFY, INFO outside any dialog (§12.2.2)
            txn.respond(policy.respond(request, 481, to_tag=new_tag()))
        else:
            handler(txn, request, source)

    def _out_of_dialog_INVITE(self, txn, request, source):
        if CASCADE in request.headers:
            self.cascades.accept(txn, request, source)
            return
        if self.agent is not None and "replaces" not in request.headers:
            if self.agent.serves(request.uri):
                self.agent.invite(txn, request, source)
                return
            if not self._ours(request.uri):                 # for someone elsewhere
                user = self.agent.calls_out(request, source)
                if user is None:
                    txn.respond(self.policy.respond(request, 403, "Not Relaying",
                                                    to_tag=new_tag()))
                else:
                    self.agent.call_out(txn, request, source, user)
                return
            if request.uri.user not in self.conferences:    # an agent makes no rooms
                txn.respond(self.policy.respond(request, 404, "No Such User",
                                                to_tag=new_tag()))
                return
        respond = self.policy.respond
        replaced = None
        if "replaces" in request.headers:
            replaced = self._replaced_leg(request)
            if replaced is None:
                txn.respond(respond(request, 481, "No Call To Replace", to_tag=new_tag()))
                return
            conference = replaced.conference
        else:
            conference = self.conference_for(request.uri)
        if conference is None:
            status, reason = (503, "Too Many Conferences") if request.uri.user else (
                404, "No Such Conference")
            txn.respond(respond(request, status, reason, to_tag=new_tag()))
            return
        if self.agent is not None and replaced is None and not self.agent.admits(conference):
            txn.respond(respond(request, 403, "Private Call", to_tag=new_tag()))
            return
        provisional = replaced is None and self.is_full()
        if provisional and not self.can_overflow(conference):
            txn.respond(respond(request, 486, "Conference Focus Full", to_tag=new_tag(),
                                headers=[("Retry-After", "60")]))
            self._maybe_retire(conference)
            return
        try:
            offer = parse_offer(request)
        except SDPError as e:
            txn.respond(respond(request, 400, e.reason, to_tag=new_tag()))
            self._maybe_retire(conference)
            return
        try:
            leg = self.new_leg(conference, source.transport)
        except PortsExhausted:
            txn.respond(respond(request, 503, "Out Of Media Ports", to_tag=new_tag(),
                                headers=[("Retry-After", "30")]))
            self._maybe_retire(conference)
            return
        leg.replaces = replaced
        leg.provisional = provisional
        if multifocus.EVENT in (request.headers.get("allow-events") or "") and \
                request.contacts:
            self.mesh_of(conference).add_candidate(request.contacts[0].uri)
        try:
            leg.accept(txn, request, source, offer)
        except SDPError as e:
            txn.respond(respond(request, 488, e.reason, to_tag=new_tag()))
            leg._end("no acceptable media")
        except DialogError as e:
            txn.respond(respond(request, e.status, e.reason, to_tag=new_tag()))
            leg._end("no dialog")
        except Exception:
            leg._end("internal error")
            raise

    def _replaced_leg(self, request):
        """The confirmed call a ``Replaces`` header names (RFC 3891 §3: its
        to-tag is our tag, its from-tag the peer's), or None."""
        call_id, *params = [p.strip() for p in request.headers.get("replaces").split(";")]
        tags = dict(p.partition("=")[::2] for p in params)
        usage = self.ua.dialogs.get((call_id, tags.get("to-tag"), tags.get("from-tag")))
        if isinstance(usage, CallLeg) and usage.state == "confirmed":
            return usage
        return None

    def _out_of_dialog_REGISTER(self, txn, request, source):
        self.agent.register(txn, request, source)   # only allowed to an agent

    def _out_of_dialog_SUBSCRIBE(self, txn, request, source):
        self.notifier.subscribe(txn, request, source)

    def _out_of_dialog_REFER(self, txn, request, source):
        self.refer(txn, request, source, self.conference_for(request.uri, create=False))

    def _out_of_dialog_OPTIONS(self, txn, request, source):
        """Answer like an INVITE would (RFC 3261 §11.2), without creating."""
        headers = self.policy.capability_headers()
        name = request.uri.user
        if name:
            conference = self.conferences.get(name)
            uri = self.ua.local_uri(name, source.transport)
            if conference is None and name != self.config.factory_user and \
                    len(self.conferences) >= self.config.max_conferences:
                txn.respond(self.policy.respond(request, 503, "Too Many Conferences",
                                                to_tag=new_tag()))
                return
            headers.append(("Contact", str(NameAddr(uri, params={"isfocus": None}))))
            if self.is_full():
                txn.respond(self.policy.respond(request, 486, "Conference Focus Full",
                                                to_tag=new_tag(), headers=headers))
                return
        txn.respond(self.policy.respond(request, 200, to_tag=new_tag(), headers=headers))

    def cancel_received(self, txn, cancel, source, invite_txn):
        # §9.2: we answer INVITEs at once (but an agent's ringing calls), so
        # the CANCEL mostly only gets its 200 (481 when it matches nothing).
        txn.respond(self.policy.respond(cancel, 200 if invite_txn else 481,
                                        to_tag=new_tag()))
        if invite_txn is not None and self.agent is not None:
            self.agent.cancelled(invite_txn)

    def ack_received(self, ack, source):
        """A 2xx ACK (§13.3.1.4, §17.2.3): to the leg of its dialog."""
        usage = self.ua.find_dialog(ack) if ack.to.tag else None
        if isinstance(usage, CallLeg):
            usage.ack_received(ack, source)

    def transaction_error(self, txn, reason):
        self.log.info("{method} from {peer} failed: {why}", method=txn.request.method,
                      peer=str(txn.source), why=reason)

    def stray_response(self, response, source):
        self.log.debug("stray response {status} from {peer}", status=response.status,
                       peer=str(source))

    # -- shutdown --------------------------------------------------------

    def shutdown(self):
        """Leave: hand the members of multi-focus conferences to other foci
        (failover.py), then end every other call with BYE and every
        subscription with a final NOTIFY; Deferred firing when all were
        answered (or failed)."""
        self.stopping = True
        leaving = [mesh.failover.leave() for mesh in list(self.meshes.values())]
        done = defer.Deferred()
        d = defer.DeferredList(leaving, consumeErrors=True)
        d.addCallback(lambda _: self._end_everything()).addBoth(done.callback)
        return done

    def _end_everything(self):
        self.cascades.stop()
        self.audio.stop()
        if self.registrar is not None:
            self.registrar.stop()
        ds = [self.notifier.terminate_all("noresource")]
        for legs in self.legs.values():
            ds += [leg.hangup() for leg in list(legs)]
        for mesh in self.meshes.values():
            mesh.close()
        self.log.info("shutting down: {calls} calls, {subs} subscriptions",
                      calls=self.load, subs=self.notifier.count)
        return defer.DeferredList(ds, consumeErrors=True)
