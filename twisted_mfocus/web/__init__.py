"""The management HTTP API (twisted.web)."""
