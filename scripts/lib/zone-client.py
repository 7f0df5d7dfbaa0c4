#!/usr/bin/env python3
"""The demo's client pod (scripts/lib/demo-zones.sh): N HTTP GETs of the
backends' payload, each to a backend chosen the way kube-proxy would.

  zone-client.py MODE N SEED CLIENT_ZONE ZONE=IP [ZONE=IP ...]

MODE is `random` (no topology hints: any endpoint) or `hinted` (Topology
Aware Routing: the endpoint in the client's zone). Prints one JSON object:
requests per zone, the bytes the client itself received (status line,
headers and body, as read from its sockets), and each request's zone,
bytes and seconds.
"""
import json
import random
import socket
import sys
import time


def get(ip, port=80):
    """One GET over a fresh connection; returns (bytes received, body bytes)."""
    with socket.create_connection((ip, port), timeout=60) as s:
        s.sendall(b"GET /payload HTTP/1.0\r\nHost: backend\r\n\r\n")
        total = 0
        chunks = []
        while True:
            b = s.recv(1 << 16)
            if not b:
                break
            total += len(b)
            if len(chunks) < 1:
                chunks.append(b)
        head = chunks[0].split(b"\r\n", 1)[0] if chunks else b""
        if not head.startswith(b"HTTP/1.") or b" 200 " not in head:
            raise SystemExit(f"backend {ip}: unexpected answer {head!r}")
        return total


def main():
    mode, n, seed, own = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), sys.argv[4]
    backends = dict(a.split("=", 1) for a in sys.argv[5:])
    if mode not in ("random", "hinted") or own not in backends:
        raise SystemExit("usage: zone-client.py random|hinted N SEED CLIENT_ZONE ZONE=IP...")
    rng = random.Random(seed)
    zones = sorted(backends)
    out = {"mode": mode, "own_zone": own, "requests_by_zone": {z: 0 for z in zones},
           "bytes_received_by_client": 0, "requests": []}
    for _ in range(n):
        zone = own if mode == "hinted" else rng.choice(zones)
        t0 = time.monotonic()
        got = get(backends[zone])
        dt = time.monotonic() - t0
        out["requests_by_zone"][zone] += 1
        out["bytes_received_by_client"] += got
        out["requests"].append({"zone": zone, "bytes": got, "seconds": round(dt, 6)})
    print(json.dumps(out))


if __name__ == "__main__":
    main()
