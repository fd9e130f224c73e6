"""Reference for options_bench: the least a Twisted UDP server can do to
answer OPTIONS — copy five header lines into a canned 200, no parsing, no
transactions.  Its rate is the ceiling for this machine and Python."""

import sys

from twisted.internet import protocol, reactor

_KEEP = (b"via:", b"v:", b"from:", b"f:", b"to:", b"t:", b"call-id:", b"i:", b"cseq:")


class Canned(protocol.DatagramProtocol):
    def datagramReceived(self, data, addr):
        lines = [b"SIP/2.0 200 OK"]
        for line in data.split(b"\r\n\r\n", 1)[0].split(b"\r\n")[1:]:
            low = line[:9].lower()
            if low.startswith(_KEEP):
                if low.startswith((b"to:", b"t:")):
                    line += b";tag=canned"
                lines.append(line)
        lines.append(b"Allow: OPTIONS\r\nContent-Length: 0\r\n\r\n")
        self.transport.write(b"\r\n".join(lines), addr)


if __name__ == "__main__":
    reactor.listenUDP(int(sys.argv[1]), Canned(), interface="127.0.0.1")
    reactor.run()
