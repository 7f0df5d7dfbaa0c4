#!/usr/bin/env python3
"""A pod's flood past its own qdiscs: AF_PACKET + PACKET_QDISC_BYPASS, which
needs only CAP_NET_RAW (containerd's default). Test-only.

usage: qdisc_bypass_flood.py IFNAME DST_MAC SRC_IP DST_IP SECONDS FRAME_BYTES
Prints one JSON line: frames and bytes sent, and the process's effective
capabilities (hex), so the test can prove it ran without CAP_NET_ADMIN."""
import json
import socket
import struct
import sys
import time

SOL_PACKET = 263
PACKET_QDISC_BYPASS = 20


def checksum(b):
    s = sum(struct.unpack("!%dH" % (len(b) // 2), b))
    s = (s >> 16) + (s & 0xFFFF)
    s += s >> 16
    return ~s & 0xFFFF


def frame(src_mac, dst_mac, src_ip, dst_ip, size):
    payload = b"x" * (size - 14 - 20 - 8)
    udp = struct.pack("!HHHH", 40000, 9, 8 + len(payload), 0) + payload
    ip = struct.pack("!BBHHHBBH4s4s", 0x45, 0, 20 + len(udp), 0, 0x4000, 64, 17, 0,
                     socket.inet_aton(src_ip), socket.inet_aton(dst_ip))
    ip = ip[:10] + struct.pack("!H", checksum(ip)) + ip[12:]
    return dst_mac + src_mac + b"\x08\x00" + ip + udp


def main():
    ifname, dst_mac, src_ip, dst_ip, seconds, size = sys.argv[1:7]
    caps = [l.split()[1] for l in open("/proc/self/status") if l.startswith("CapEff")][0]
    s = socket.socket(socket.AF_PACKET, socket.SOCK_RAW)
    s.setsockopt(SOL_PACKET, PACKET_QDISC_BYPASS, 1)
    s.bind((ifname, 0))
    src_mac = s.getsockname()[4]
    f = frame(src_mac, bytes.fromhex(dst_mac.replace(":", "")), src_ip, dst_ip, int(size))
    end = time.time() + float(seconds)
    frames = 0
    while time.time() < end:
        for _ in range(64):
            try:
                s.send(f)
                frames += 1
            except OSError:
                pass
    print(json.dumps({"frames": frames, "bytes": frames * len(f), "capEff": caps}))


main()
