"""Media: SDP offer/answer (sans-IO) and the RTP sockets of the focus."""
