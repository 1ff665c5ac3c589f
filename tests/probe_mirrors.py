"""Fake mirrors for probe tests: a real Twisted web server per 127.0.0.x address, whose behaviour
(fresh, stale, 500, hanging, slow drip, oversized, redirect, wrong timestamp) can be switched live."""

from __future__ import annotations

import time

from twisted.internet import reactor as _reactor
from twisted.web import resource, server

MODES = ("fresh", "stale", "500", "hang", "drip", "big", "redirect", "wrong", "future")


class FakeMirror(resource.Resource):
    isLeaf = True

    def __init__(self, mode: str = "fresh", hosts: tuple[str, ...] | None = None, reactor=None,
                 path: str = "/pub/TIME", age: float = 0.0):
        super().__init__()
        self.mode, self.hosts, self.path, self.age = mode, hosts, path, age
        self.reactor = reactor or _reactor
        self.requests: list[tuple[str, str]] = []      # (host header, path)
        self.stamp = int(time.time() - age)
        self.location = "http://elsewhere.example/TIME"     # where "redirect" points            # a timestamp file is static between syncs
        self.pending: list = []

    def render_GET(self, request):
        host = (request.getHeader("host") or "").split(":")[0].lower()
        self.requests.append((host, request.path.decode()))
        if request.path.decode() != self.path:
            request.setResponseCode(404)
            return b"not found\n"
        if self.hosts is not None and host not in self.hosts:
            request.setResponseCode(404)
            return b"no such virtual host\n"
        m = self.mode
        now = self.stamp
        if m == "fresh":
            return f"{now} {time.ctime(now)}\n".encode()
        if m == "stale":
            return f"{now - 3 * 86400}\n".encode()
        if m == "future":
            return f"{now + 30 * 86400}\n".encode()
        if m == "wrong":
            return b"<html>hello</html>\n"
        if m == "500":
            request.setResponseCode(500)
            return b"oops\n"
        if m == "redirect":
            request.setResponseCode(302)
            request.setHeader("location", self.location)
            return b""
        if m == "big":
            request.setHeader("content-type", "text/plain")
            return f"{now}\n".encode() + b"x" * 200_000
        if m == "bigchunked":
            for _ in range(50):
                request.write(b"y" * 10_000)
            request.finish()
            return server.NOT_DONE_YET
        if m == "hang":
            self.pending.append(request)
            return server.NOT_DONE_YET
        if m == "drip":
            request.write(f"{now}".encode()[:2])
            self._drip(request)
            return server.NOT_DONE_YET
        raise AssertionError(m)

    def _drip(self, request):
        if request.finished or request._disconnected:
            return
        request.write(b" ")
        self.pending.append(self.reactor.callLater(0.2, self._drip, request))

    def stop(self):
        for p in self.pending:
            if hasattr(p, "cancel") and p.active():
                p.cancel()
        self.pending.clear()


def serve(mirror: FakeMirror, address: str, reactor=None):
    """Listen on address:0; returns the listening port (call .stopListening() in cleanup)."""
    r = reactor or _reactor
    site = server.Site(mirror)
    site.displayTracebacks = False
    site.log = lambda request: None                # keep test output quiet
    return r.listenTCP(0, site, interface=address)


def make_ca_and_cert(names: list[str]):
    """(ca_pem, server_pem with key) for a test CA and a server certificate for `names`."""
    import datetime as dt

    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    now = dt.datetime.now(dt.UTC)
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "mirrordns test CA")])
    ca = (x509.CertificateBuilder().subject_name(ca_name).issuer_name(ca_name)
          .public_key(ca_key.public_key()).serial_number(x509.random_serial_number())
          .not_valid_before(now - dt.timedelta(days=1)).not_valid_after(now + dt.timedelta(days=30))
          .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
          .sign(ca_key, hashes.SHA256()))
    key = ec.generate_private_key(ec.SECP256R1())
    cert = (x509.CertificateBuilder()
            .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, names[0])]))
            .issuer_name(ca_name).public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - dt.timedelta(days=1)).not_valid_after(now + dt.timedelta(days=30))
            .add_extension(x509.SubjectAlternativeName([x509.DNSName(n) for n in names]),
                           critical=False)
            .sign(ca_key, hashes.SHA256()))
    pem = serialization.Encoding.PEM
    ca_pem = ca.public_bytes(pem)
    server_pem = cert.public_bytes(pem) + key.private_bytes(
        pem, serialization.PrivateFormat.TraditionalOpenSSL, serialization.NoEncryption())
    return ca_pem, server_pem


def serve_tls(mirror: FakeMirror, address: str, server_pem: bytes, reactor=None):
    from twisted.internet import ssl

    r = reactor or _reactor
    site = server.Site(mirror)
    site.log = lambda request: None
    opts = ssl.PrivateCertificate.loadPEM(server_pem).options()
    return r.listenSSL(0, site, opts, interface=address)
