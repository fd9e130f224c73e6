"""Media: SDP offer/answer, SRTP, the codecs and the 16 kHz mixer (sans-IO),
and the RTP sockets and mixing tick of the focus (the Twisted edge)."""
