"""A stand-in for focus/views.py in unit tests of the web layer: it records
what the API asked of it (the API's only way into the focus)."""


class Views:
    """focus/views.py's interface, recording what the API asked; it is its
    own ``moderation`` (focus/moderation.py's interface), recording too."""

    def __init__(self):
        self.calls = []
        self.moderation = self

    def summaries(self):
        self.calls.append("summaries")
        return []

    def conference(self, name):
        self.calls.append(("conference", name))
        return {"name": name} if name == "room" else None

    def set_muted(self, name, member, muted):
        self.calls.append(("set_muted", name, member, muted))
        return 200, {"uri": member, "muted": muted}

    def kick(self, name, member):
        self.calls.append(("kick", name, member))
        return 200, {"uri": member, "calls": 1}

    def mute_all(self, name, muted, spare=None):
        self.calls.append(("mute_all", name, muted, spare))
        return 200, {"name": name, "muted": muted, "except": spare, "members": [],
                     "elsewhere": []}

    def set_locked(self, name, locked):
        self.calls.append(("set_locked", name, locked))
        return 200, {"name": name, "locked": locked}

    def end(self, name):
        self.calls.append(("end", name))
        return 200, {"name": name, "calls": 0, "subscriptions": 0}

    def dial(self, name, uri):
        self.calls.append(("dial", name, uri))
        return 202, {"uri": uri, "status": "dialling"}

    def dials(self, name):
        self.calls.append(("dials", name))
        return [] if name == "room" else None
