"""The conference focus: the transaction user on top of the SIP core."""
