"""Who is a focus of a conference (focus/trust.py), sans-IO: a conference's
own key among agents, the rule that picks the key a request is signed and
checked with, and the Target-Dialog that proves a recruiting focus
(RFC 4538)."""

import pytest
from twisted.internet import task

from twisted_mfocus.config import Config, Role
from twisted_mfocus.focus.node import Node
from twisted_mfocus.focus.trust import KEY_HEADER, ConferenceKey, FocusTrust
from twisted_mfocus.sip.address import Peer
from twisted_mfocus.sip.dialog import parse_target_dialog, target_dialog
from twisted_mfocus.sip.errors import SIPError
from twisted_mfocus.sip.message import parse_datagram
from twisted_mfocus.sip.proof import Prover
from twisted_mfocus.sip.uas import Refused

from .credentials import users_file

LOOPBACK = Peer("UDP", "127.0.0.1", 5070)


def request(method="SUBSCRIBE", ruri="sip:bob@127.0.0.1:5062",
            from_="sip:127.0.0.1:5060", to="sip:conf-x@127.0.0.1:5060", extra=()):
    lines = [f"{method} {ruri} SIP/2.0",
             "Via: SIP/2.0/UDP 127.0.0.1:5070;branch=z9hG4bKtrust1",
             "Max-Forwards: 70", f"From: <{from_}>;tag=f1", f"To: <{to}>",
             "Call-ID: trust-1", f"CSeq: 1 {method}", *extra, "Content-Length: 0"]
    return parse_datagram(("\r\n".join(lines) + "\r\n\r\n").encode())


def on_wire(req):
    return parse_datagram(req.to_bytes())


class Room:
    def __init__(self, name):
        self.name, self.key = name, None

    def foci(self):
        return {"sip:127.0.0.1:5070"}           # the source's address, as a focus id


class Rooms:
    """The registry's face trust.py uses (room.py ``Rooms``)."""

    def __init__(self, *names):
        self._rooms = {n: Room(n) for n in names}
        self.keyed = 0

    def __contains__(self, name):
        return name in self._rooms

    def __iter__(self):
        return iter(self._rooms.values())

    def get(self, name):
        return self._rooms.get(name)

    def set_key(self, room, key):
        self.keyed += room.key is None
        room.key = key


@pytest.fixture
def trust(tmp_path):
    """trust(role, *room names, prover=None): a FocusTrust over those rooms."""
    users = users_file(tmp_path)

    def make(role="primary", *names, prover=None):
        return _trust(users, role, *names, prover=prover)
    return make


def _trust(users, role, *names, prover=None):
    config = Config(overrides={("focus", "role"): role, ("agent", "users"): "bob",
                               ("auth", "users_file"): str(users)})
    node = Node(config)
    t = FocusTrust(node, Rooms(*names), prover=prover)
    t.clock = task.Clock()
    t.clock.advance(1_700_000_000)
    return t


# -- Target-Dialog (RFC 4538 §7) --------------------------------------------------

class Dialog:
    call_id, local_tag, remote_tag = "c1@host", "ours", "theirs"


def test_target_dialog_names_the_tags_as_the_recipient_sees_them():
    value = target_dialog(Dialog())
    assert value == "c1@host;local-tag=theirs;remote-tag=ours"
    # The recipient keys its dialogs (Call-ID, its own tag, ours).
    assert parse_target_dialog(value) == ("c1@host", "theirs", "ours")
    assert parse_target_dialog("c1;remote-tag=b ; local-tag=a;x=y") == ("c1", "a", "b")


@pytest.mark.parametrize("value", ["", "c1", "c1;local-tag=a", "c1;local-tag=;remote-tag=b",
                                   "c1;local-tag=a;local-tag=c;remote-tag=b",
                                   "c 1;local-tag=a;remote-tag=b", ";local-tag=a;remote-tag=b"])
def test_a_target_dialog_that_names_no_one_dialog_is_400(value):
    with pytest.raises(SIPError) as caught:
        parse_target_dialog(value)
    assert caught.value.status == 400


# -- the conference key -------------------------------------------------------------

def test_a_conference_key_travels_as_43_base64url_characters():
    clock = task.Clock()
    key = ConferenceKey.new(clock)
    assert len(key.text()) == 43
    assert ConferenceKey.parse(key.text(), clock).secret == key.secret
    for bad in (None, "", key.text()[:-1], key.text() + "A", "!" * 43):
        with pytest.raises(Refused) as caught:
            ConferenceKey.parse(bad, clock)
        assert caught.value.status == 400 and KEY_HEADER in caught.value.reason


# -- which key signs and checks what ----------------------------------------------

def test_the_room_a_request_names_is_its_to_then_from_then_request_uri(trust):
    t = trust("primary", "conf-x", "conf-y")
    x, y = t.rooms.get("conf-x"), t.rooms.get("conf-y")
    assert t.named_room(request()) is x
    assert t.named_room(request(to="sip:127.0.0.1:5062", from_="sip:conf-y@h")) is y
    assert t.named_room(request(ruri="sip:conf-y@h", to="sip:a@h")) is y
    assert t.named_room(request(ruri="sip:bob@h", to="sip:a@h")) is None


def test_a_keyed_conference_signs_every_request_naming_it_with_its_key(trust):
    node_prover = Prover(b"d" * 32, task.Clock())
    t = trust("primary", "conf-x", prover=node_prover)
    x = t.rooms.get("conf-x")
    assert t.signer_for(request(), to_focus=False) is None
    assert t.signer_for(request(), to_focus=True) is node_prover
    t.key_of(x)
    assert t.rooms.keyed == 1 and t.key_of(x) is x.key          # made once
    assert t.signer_for(request(), to_focus=False) is x.key.prover
    assert t.signer_for(request(to="sip:other@h"), to_focus=True) is node_prover


def test_a_proof_under_one_conferences_key_proves_nothing_for_another(trust):
    sender, receiver = trust("agent", "conf-x", "conf-y"), trust("agent", "conf-x", "conf-y")
    key = sender.key_of(sender.rooms.get("conf-x"))
    for t in (receiver,):
        t.adopt_key(t.rooms.get("conf-x"), ConferenceKey(key.secret, t.clock))
        t.adopt_key(t.rooms.get("conf-y"), ConferenceKey.new(t.clock))
    req = request()
    sender.signer_for(req, to_focus=True).sign(req)
    wire = on_wire(req)
    x, y = receiver.rooms.get("conf-x"), receiver.rooms.get("conf-y")
    assert receiver.proven(wire, LOOPBACK) and receiver.trusts(wire, LOOPBACK, x)
    assert not receiver.trusts(wire, LOOPBACK, y)
    # Nor for a room without a key (an agent's two-party call, say).
    y.key = None
    assert not receiver.proven(wire, LOOPBACK, y)
    # The same request with another key, or none: no focus of conf-x.
    other = request()
    ConferenceKey.new(receiver.clock).prover.sign(other)
    assert not receiver.trusts(on_wire(other), LOOPBACK, x)
    assert not receiver.trusts(request(), LOOPBACK, x)


def test_no_address_trust_for_a_keyed_conference_nor_at_an_agent(trust):
    server = trust("primary", "conf-x")
    assert server.trusts(request(), LOOPBACK)      # a focus of a conference we share
    server.key_of(server.rooms.get("conf-x"))
    assert not server.trusts(request(), LOOPBACK)
    assert not server.trusts(request(to="sip:conf-y@h"), LOOPBACK)   # keyed rooms' foci
    agent = trust("agent", "conf-x")
    assert agent.node.role is Role.AGENT
    assert not agent.trusts(request(), LOOPBACK)
