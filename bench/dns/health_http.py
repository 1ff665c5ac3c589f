#!/usr/bin/env python3
"""Fake mirror health endpoints for the peers' own health checks (gdnsd http_status, PowerDNS ifurlup).

Adapted from shared/reference/dns-peers/health_http.py: loopback only, and a bounded lifetime
(--lifetime seconds) so a benchmark that dies without running its cleanup leaves nothing listening
for long. One tiny HTTP server per mirror address (all in 127.0.0.0/8) on PORT answers GET /health
with 200, or 503 when the address is listed in DOWNFILE (one IP per line, re-read on every request).

Usage: health_http.py [--lifetime SECONDS] PORT DOWNFILE IP [IP ...]
"""
import argparse
import ipaddress
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer


def make_handler(addr, downfile):
    class H(BaseHTTPRequestHandler):
        def do_GET(self):
            try:
                with open(downfile) as f:
                    down = {line.strip() for line in f}
            except OSError:
                down = set()
            code = 503 if addr in down else 200
            body = f"{addr} {'down' if code != 200 else 'ok'}\n".encode()
            try:
                self.send_response(code)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)
            except (BrokenPipeError, ConnectionResetError):
                pass  # gdnsd's http_status closes once it has the status line

        def log_message(self, *a):
            pass
    return H


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--lifetime", type=float, default=1800.0,
                    help="exit after this many seconds whatever happens (default 1800)")
    ap.add_argument("port", type=int)
    ap.add_argument("downfile")
    ap.add_argument("addrs", nargs="+")
    a = ap.parse_args()
    for ip in a.addrs:
        if not ipaddress.ip_address(ip).is_loopback:
            raise SystemExit(f"health_http.py: {ip}: loopback addresses only")
    for ip in a.addrs:
        s = ThreadingHTTPServer((ip, a.port), make_handler(ip, a.downfile))
        s.daemon_threads = True
        threading.Thread(target=s.serve_forever, daemon=True).start()
    print(f"health endpoints on {' '.join(a.addrs)} port {a.port} for {a.lifetime:.0f} s", flush=True)
    threading.Event().wait(a.lifetime)


if __name__ == "__main__":
    main()
