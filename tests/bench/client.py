"""A small HTTPS client of the benchmarks, for what wrk cannot do.

    client.py newconn   --url URL [--seconds S] [--max-calls N]   # a new TLS connection per call
    client.py keepalive --url URL --calls N                       # N calls on one connection
    client.py batch     --url URL --calls N [--newconn]           # the same, started on cue

`batch` is for counting the gateway's instructions: it makes a few warm-up calls (STS, leaf
certificate), prints "warm", waits for a line on stdin, then makes exactly N calls (on one
connection, or each on a new one with --newconn).

Every call is the same SigV4-shaped EC2 query call as tests/bench/sigv4.lua (access key from
BENCH_AKID). Certificates are not verified (like wrk): the client measures, it does not audit.
The last line printed is "BENCHJSON {...}": calls, errors, non-2xx answers and the latency
distribution in microseconds.
"""

from __future__ import annotations

import argparse
import json
import os
import socket
import ssl
import sys
import time
import urllib.parse

BODY = b"Action=DescribeRegions&Version=2016-11-15"
POINTS = [*range(1, 100), 99.5, 99.9, 99.99, 100]


def request_bytes(host: str, close: bool) -> bytes:
    akid = os.environ.get("BENCH_AKID", "AKIAPLACEHOLDERAGENT0")
    stamp = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime())
    auth = (f"AWS4-HMAC-SHA256 Credential={akid}/{stamp[:8]}/us-east-1/ec2/aws4_request, "
            f"SignedHeaders=content-type;host;x-amz-date, Signature={'0' * 64}")
    head = (f"POST / HTTP/1.1\r\nHost: {host}\r\n"
            "Content-Type: application/x-www-form-urlencoded; charset=utf-8\r\n"
            f"X-Amz-Date: {stamp}\r\nAuthorization: {auth}\r\nContent-Length: {len(BODY)}\r\n"
            + ("Connection: close\r\n" if close else "") + "\r\n")
    return head.encode() + BODY


def read_answer(conn: ssl.SSLSocket, pending: bytearray) -> int:
    """Reads one answer with a Content-Length body; returns its status."""
    while b"\r\n\r\n" not in pending:
        chunk = conn.recv(65536)
        if not chunk:
            raise ConnectionError("connection closed before the answer's head")
        pending += chunk
    head, _, rest = bytes(pending).partition(b"\r\n\r\n")
    lines = head.split(b"\r\n")
    status = int(lines[0].split()[1])
    length = 0
    for line in lines[1:]:
        name, _, value = line.partition(b":")
        if name.strip().lower() == b"content-length":
            length = int(value.strip())
    body = bytearray(rest)
    while len(body) < length:
        chunk = conn.recv(65536)
        if not chunk:
            raise ConnectionError("connection closed inside the answer's body")
        body += chunk
    pending[:] = body[length:]
    return status


def context() -> ssl.SSLContext:
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE
    return ctx


def percentiles(samples: list[int]) -> list[list[float]]:
    ordered = sorted(samples)
    if not ordered:
        return []
    last = len(ordered) - 1
    return [[p, ordered[min(last, int(round(p / 100 * last)))]] for p in POINTS]


def newconn(url: urllib.parse.SplitResult, seconds: float, max_calls: int) -> dict:
    ctx, host, port = context(), url.hostname, url.port or 443
    request = request_bytes(host, close=True)
    samples: list[int] = []
    errors = non_2xx = 0
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline and len(samples) + errors < max_calls:
        started = time.perf_counter_ns()
        try:
            with socket.create_connection((host, port), timeout=10) as raw:
                raw.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
                with ctx.wrap_socket(raw, server_hostname=host) as conn:
                    conn.sendall(request)
                    status = read_answer(conn, bytearray())
        except (OSError, ValueError, IndexError):
            errors += 1
            continue
        samples.append((time.perf_counter_ns() - started) // 1000)
        non_2xx += not 200 <= status < 300
    return {"calls": len(samples), "errors": errors, "non_2xx": non_2xx,
            "percentiles": percentiles(samples)}


def keepalive(url: urllib.parse.SplitResult, calls: int) -> dict:
    ctx, host, port = context(), url.hostname, url.port or 443
    request = request_bytes(host, close=False)
    samples: list[int] = []
    non_2xx = 0
    with socket.create_connection((host, port), timeout=60) as raw:
        raw.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        with ctx.wrap_socket(raw, server_hostname=host) as conn:
            pending = bytearray()
            for _ in range(calls):
                started = time.perf_counter_ns()
                conn.sendall(request)
                status = read_answer(conn, pending)
                samples.append((time.perf_counter_ns() - started) // 1000)
                non_2xx += not 200 <= status < 300
    return {"calls": len(samples), "errors": 0, "non_2xx": non_2xx,
            "percentiles": percentiles(samples)}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("mode", choices=["newconn", "keepalive", "batch"])
    parser.add_argument("--url", required=True)
    parser.add_argument("--seconds", type=float, default=5.0)
    parser.add_argument("--max-calls", type=int, default=1_000_000)
    parser.add_argument("--calls", type=int, default=1000)
    parser.add_argument("--newconn", action="store_true", help="batch: a new connection per call")
    args = parser.parse_args()
    url = urllib.parse.urlsplit(args.url)
    if args.mode == "batch":
        warm = keepalive(url, 5)
        print("warm" if not warm["non_2xx"] else "warm-up failed", flush=True)
        sys.stdin.readline()
        if args.newconn:
            result = newconn(url, 3600.0, args.calls)
        else:
            result = keepalive(url, args.calls)
    elif args.mode == "newconn":
        result = newconn(url, args.seconds, args.max_calls)
    else:
        result = keepalive(url, args.calls)
    print("BENCHJSON " + json.dumps(result), flush=True)
    return 0 if result["calls"] and not result["errors"] and not result["non_2xx"] else 1


if __name__ == "__main__":
    sys.exit(main())
