"""A stand-in for focus/views.py in unit tests of the web layer: it records
what the API asked of it (the API's only way into the focus)."""


class Views:
    """focus/views.py's interface, recording what the API asked."""

    def __init__(self):
        self.calls = []

    def summaries(self):
        self.calls.append("summaries")
        return []

    def conference(self, name):
        self.calls.append(("conference", name))
        return {"name": name} if name == "room" else None

    def set_muted(self, name, member, muted):
        self.calls.append(("set_muted", name, member, muted))
        return 200, {"uri": member, "muted": muted}
