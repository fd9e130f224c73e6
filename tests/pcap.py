"""Packet captures on lo for tests and benchmarks: dumpcap to a classic
pcap file, and a reader for it (UDP datagrams, and SIP messages with TCP
streams reassembled)."""

import os
import re
import signal
import struct
import subprocess
import time

__all__ = ["Capture", "ip_packets", "udp_datagrams", "sip_messages"]


class Capture:
    """dumpcap on lo (classic pcap): UDP and TCP of ``ports``, or what the
    capture filter ``bpf`` names."""

    def __init__(self, path, ports=(), bpf=None):
        self.path = path
        self.err = open(path + ".log", "wb")
        filt = bpf or "(udp or tcp) and (" + " or ".join(f"port {p}" for p in ports) + ")"
        self.proc = subprocess.Popen(["dumpcap", "-i", "lo", "-P", "-q", "-B", "64", "-s", "0",
                                      "-w", path, "-f", filt], stdin=subprocess.DEVNULL,
                                     stdout=self.err, stderr=self.err)
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline and self.proc.poll() is None:
            if os.path.exists(path) and os.path.getsize(path) >= 24:
                time.sleep(0.3)
                return
            time.sleep(0.05)
        raise RuntimeError(f"dumpcap did not start, see {path}.log")

    def stop(self):
        """'received/dropped' of dumpcap's summary line."""
        if self.proc.poll() is None:
            os.kill(self.proc.pid, signal.SIGTERM)
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                os.kill(self.proc.pid, signal.SIGKILL)
                self.proc.wait()
        self.err.close()
        with open(self.path + ".log") as f:
            m = re.search(r"received/dropped on interface .*?: (\d+)/(\d+)", f.read())
        return (int(m.group(1)), int(m.group(2))) if m else (None, None)


def ip_packets(path):
    """(time, IPv4 packet) of each packet of a classic pcap file."""
    with open(path, "rb") as f:
        data = f.read()
    magic = struct.unpack("<I", data[:4])[0]
    end = "<" if magic in (0xA1B2C3D4, 0xA1B23C4D) else ">"
    scale = 1e-9 if magic in (0xA1B23C4D, 0x4D3CB2A1) else 1e-6
    link = struct.unpack(end + "I", data[20:24])[0]
    skip = {1: 14, 113: 16}[link]
    pos = 24
    while pos + 16 <= len(data):
        sec, frac, incl, _ = struct.unpack(end + "IIII", data[pos:pos + 16])
        pkt = data[pos + 16:pos + 16 + incl]
        pos += 16 + incl
        ip = pkt[skip:]
        if len(ip) >= 20 and ip[0] >> 4 == 4:
            yield sec + frac * scale, ip


CONTENT_LENGTH = re.compile(rb"\r\n(?:content-length|l)[ \t]*:[ \t]*(\d+)", re.I)


def udp_datagrams(path):
    """(time, sport, dport, payload) of each unfragmented IPv4/UDP datagram."""
    for t, ip in ip_packets(path):
        if ip[9] == 17 and not struct.unpack(">H", ip[6:8])[0] & 0x3FFF:
            ihl = (ip[0] & 15) * 4
            sport, dport, ulen = struct.unpack(">HHH", ip[ihl:ihl + 6])
            yield t, sport, dport, ip[ihl + 8:ihl + ulen]


def sip_messages(path):
    """(time, sport, dport, message) of each SIP message of a capture: UDP
    datagrams as they are, TCP streams reassembled in sequence order and
    framed by Content-Length (RFC 3261 §18.3), each message timed by the
    segment that completed it.  Loopback loses nothing; a retransmitted
    segment (sequence already seen) is skipped.  IP fragments are counted in
    sip_messages.fragments."""
    sip_messages.fragments = 0
    streams = {}  # (src, sport, dst, dport) -> [next seq, buffer]
    for t, ip in ip_packets(path):
        ihl = (ip[0] & 15) * 4
        total = struct.unpack(">H", ip[2:4])[0]
        if ip[9] == 17:
            if struct.unpack(">H", ip[6:8])[0] & 0x3FFF:
                sip_messages.fragments += 1
                continue
            sport, dport, ulen = struct.unpack(">HHH", ip[ihl:ihl + 6])
            yield t, sport, dport, ip[ihl + 8:ihl + ulen]
        elif ip[9] == 6:
            sport, dport, seq = struct.unpack(">HHI", ip[ihl:ihl + 8])
            flags = ip[ihl + 13]
            payload = ip[ihl + (ip[ihl + 12] >> 4) * 4:total]
            key = (ip[12:16], sport, ip[16:20], dport)
            if flags & 0x02:  # SYN: the stream starts after it
                streams[key] = [(seq + 1) & 0xFFFFFFFF, b""]
                continue
            state = streams.get(key)
            if state is None or not payload or seq != state[0]:
                continue
            state[0] = (seq + len(payload)) & 0xFFFFFFFF
            state[1] += payload
            while True:
                buf = state[1].lstrip(b"\r\n")
                head_end = buf.find(b"\r\n\r\n")
                if head_end < 0:
                    state[1] = buf
                    break
                m = CONTENT_LENGTH.search(buf, 0, head_end + 2)
                size = head_end + 4 + (int(m.group(1)) if m else 0)
                if len(buf) < size:
                    state[1] = buf
                    break
                yield t, sport, dport, buf[:size]
                state[1] = buf[size:]
