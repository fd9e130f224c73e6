"""The conference: who is in it (model.py) and its RFC 4575 documents (info.py)."""
