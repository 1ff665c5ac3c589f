"""One probe of one mirror: URLs and addresses in, a `ProbeResult` out. No database here.

A probe fetches the mirror's timestamp file from every base URL (http, https) over every address the
DNS would hand out for it: the addresses pinned in the table when it has any (an admin's word always
wins), else the ones its host name resolves to right now (an IP literal in a URL is taken as it
is), through the system's resolver or `[probes] nameservers`. The result names the addresses it
used (`probed_ipv4`/`probed_ipv6`), and the plan serves resolved addresses once a probe over them
passed (dnsd.serving). Each fetch goes first with the mirror's own host
name, then once per name the mirror must also serve (its `ccN.Z`, `cc.Z` and the geo name): a mirror
whose web server has no virtual host for those names would send our users to someone else's site.

The client is Twisted's own `Agent` (the client underneath treq; its endpoint factory pins the table
address), chosen over `requests` on a thread pool by the benchmark in docs/probes.md: no thread per
probe, cancellation closes the socket, and a hanging mirror holds one socket, not one thread. treq's
own layer (cookies, gzip decoding, body buffering, URL normalising) is not used: a probe wants none
of it, and it cost about a tenth of the loop's CPU in bench/probes.py.

Every fetch of one probe shares one deadline (`[probes] timeout`), so a hanging mirror costs one
timeout however many URLs and names it has.
"""

from __future__ import annotations

import datetime as _dt
import email.utils
import hashlib
import ipaddress
import random
import threading
from dataclasses import dataclass, field, replace
from urllib.parse import quote, urlsplit, urlunsplit

from OpenSSL import SSL
from service_identity.exceptions import CertificateError, VerificationError
from twisted.internet import defer, protocol
from twisted.internet import error as ierror
from twisted.internet._resolver import GAIResolver
from twisted.internet.endpoints import (
    TCP4ClientEndpoint,
    TCP6ClientEndpoint,
    wrapClientTLS,
)
from twisted.internet.ssl import optionsForClientTLS
from twisted.python.failure import Failure
from twisted.python.threadpool import ThreadPool
from twisted.web import client as wclient
from twisted.web.http_headers import Headers
from twisted.web.iweb import IAgentEndpointFactory
from zope.interface import implementer

from dnsd import checksums, outbound, serving
from dnsd.config import canary_origin
from dnsd.serving import fmt_age
from dnsd.validation import ip_literal
from dnsd.validation import is_forbidden_address as is_forbidden_address  # the one rule
from probes import content
from probes.content import Canary, MirrorInfo, MirrorInfoError

ERROR_CLASSES = ("refused", "timeout", "dns", "tls", "http-status", "no-timestamp", "stale",
                 "wrong-host", "too-large", "private-address", "soft-404", "canary-missing",
                 "canary-size", "canary-hash", "mirror-info", "error")
CONTENT_CLASSES = ("soft-404", "canary-missing", "canary-size", "canary-hash", "mirror-info")
FUTURE_SLACK = 3600          # a timestamp this far in the future is not believed


class BodyTooLarge(Exception):
    pass


class _Unresolved(Exception):
    def __init__(self, error_class: str, message: str):
        super().__init__(message)
        self.error_class = error_class


def utc_from_ts(ts: float) -> _dt.datetime:
    return _dt.datetime.fromtimestamp(ts, _dt.UTC).replace(tzinfo=None)


# --- timestamp formats ---------------------------------------------------------------------------

def parse_timestamp(body: bytes, fmt: str = "mirmon") -> float | None:
    """The sync time (Unix seconds) in a timestamp file, or None when there is none.

    mirmon: the first word of the body is a Unix time (`TIME` / `TIME.txt`).
    phpnet: php.net's `/mirror-info` line `site|php version|last updated|...`; the third field.
    debian-trace: a Debian archive trace file: a `Date:` line (RFC 2822), else the first line in
    `date -u` form (`Sat Nov 21 08:00:01 UTC 2026`).
    """
    try:
        text = body.decode("utf-8", "replace").strip()
    except Exception:
        return None
    if not text:
        return None
    if fmt == "mirmon":
        return _int_time(text.split()[0])
    if fmt == "phpnet":
        parts = text.splitlines()[0].split("|")
        return _int_time(parts[2]) if len(parts) >= 3 else None
    if fmt == "debian-trace":
        lines = text.splitlines()
        for line in lines:
            if line.lower().startswith("date:"):
                t = _rfc2822(line.split(":", 1)[1].strip())
                if t is not None:
                    return t
        return _ctime_like(lines[0].strip())
    raise ValueError(f"unknown timestamp format {fmt!r}")


def _int_time(word: str) -> float | None:
    try:
        v = int(word)
    except ValueError:
        return None
    return float(v) if v > 0 else None


def _rfc2822(s: str) -> float | None:
    try:
        d = email.utils.parsedate_to_datetime(s)
    except (TypeError, ValueError, IndexError):
        return None
    if d.tzinfo is None:
        d = d.replace(tzinfo=_dt.UTC)
    return d.timestamp()


def _ctime_like(s: str) -> float | None:
    for f in ("%a %b %d %H:%M:%S %Z %Y", "%a %b %d %H:%M:%S %Y"):
        try:
            d = _dt.datetime.strptime(" ".join(s.split()), f)
        except ValueError:
            continue
        return d.replace(tzinfo=_dt.UTC).timestamp()
    return _rfc2822(s)


# --- what to probe and what came out ------------------------------------------------------------

@dataclass(frozen=True)
class Target:
    """One mirror as the probe needs it: plain data copied out of the table."""
    mirror_id: int
    hostname: str
    country: str = ""
    name: str | None = None
    ipv4: str | None = None              # pinned in the table (none: resolve the host name)
    ipv6: str | None = None
    http_url: str | None = None
    https_url: str | None = None
    names: tuple[str, ...] = ()          # extra Host names the mirror must serve
    status: str = ""
    backup: bool = False                 # a backup mirror (dnsd.serving.age_filtered)

    @property
    def pinned(self) -> bool:
        return bool(self.ipv4 or self.ipv6)


def target_from_row(row, zone: str, geo_name: str = "www") -> Target:
    """A Target from a mirror record (dnsd.records.mirrors.Mirror) or a mapping of its columns;
    the extra names follow from its name and country."""
    get = row.get if isinstance(row, dict) else (lambda k, d=None: getattr(row, k, d))
    names: list[str] = []
    if get("name"):
        names.append(f"{get('name')}.{zone}")
        names.append(f"{get('country').lower()}.{zone}")
        if geo_name:
            names.append(f"{geo_name}.{zone}")
    return Target(
        mirror_id=get("id"), hostname=get("hostname"), country=get("country"), name=get("name"),
        ipv4=get("ipv4") or None, ipv6=get("ipv6") or None,
        http_url=get("http_url") or None, https_url=get("https_url") or None,
        names=tuple(dict.fromkeys(n.lower() for n in names)), status=get("status", "") or "",
        backup=bool(get("backup", False)),
    )


@dataclass(frozen=True)
class Fetch:
    """One GET with one Host header over one address: of the timestamp file, or (`check`) of a
    content check's file (probes.content)."""
    url: str
    host: str
    address: str | None = None
    family: int | None = None
    status: int | None = None
    ttfb_ms: float | None = None
    total_ms: float | None = None
    timestamp: float | None = None       # Unix seconds read from the file
    tls_ok: bool | None = None           # None for http
    error_class: str = ""
    error: str = ""
    check: str = ""                      # "" the timestamp; "404", "canary", "canary-range",
                                         # "mirror-info" (the timestamp page read for its fields)
    note: str = ""                       # what a passed content check saw
    mirror_info: MirrorInfo | None = None     # phpnet: the fields of the page read
    mirror_info_error: str = ""               # ... or why they could not be read

    @property
    def ok(self) -> bool:
        return not self.error_class

    def line(self) -> str:
        via = f" via {self.address}" if self.address else ""
        head = f"GET {self.url} Host: {self.host}{via}"
        if self.ok and self.check:
            return f"{head} -> {self.status} in {self.total_ms:.0f} ms, {self.note}"
        if self.ok:
            ts = utc_from_ts(self.timestamp).isoformat(" ") if self.timestamp else "-"
            return f"{head} -> {self.status} in {self.total_ms:.0f} ms, timestamp {ts} UTC"
        st = f" (HTTP {self.status})" if self.status else ""
        return f"{head} -> {self.error_class}{st}: {self.error}"


@dataclass(frozen=True)
class ProbeResult:
    mirror_id: int
    at: float                            # reactor seconds when the probe started
    ok: bool                             # serving a fresh, valid timestamp over its main URL
    error_class: str = ""
    error: str = ""
    url: str = ""
    address: str | None = None
    family: int | None = None
    http_status: int | None = None
    ttfb_ms: float | None = None
    total_ms: float | None = None
    timestamp: float | None = None
    sync_age: float | None = None
    tls_ok: bool | None = None
    ipv4_up: bool | None = None          # None: no such address in the table
    ipv6_up: bool | None = None
    https_ok: bool | None = None         # None: no https URL
    geo_check: str = ""                  # "" or "192.0.2.1 in US, not DE"
    fetches: tuple[Fetch, ...] = field(default=())
    resolved: bool = False               # the addresses came from the host name, not the table
    probed_ipv4: str | None = None       # the addresses probed (pinned or resolved)
    probed_ipv6: str | None = None
    mirror_info: MirrorInfo | None = None     # timestamp_format "phpnet": the fields it read

    def log_lines(self) -> list[str]:
        return [f.line() for f in self.fetches]

    def describe(self) -> str:
        """One line a person can read."""
        if self.ok:
            age = f", sync age {fmt_age(self.sync_age)}" if self.sync_age is not None else ""
            return f"ok: {self.url} {self.http_status} in {self.total_ms:.0f} ms{age}"
        return f"{self.error_class}: {self.error}"


# --- the HTTP side -------------------------------------------------------------------------------

@implementer(IAgentEndpointFactory)
class _PinnedEndpoints:
    """Endpoints for one fetch: the URL's own host goes to the pinned table address; any other host
    (a followed redirect) is resolved first. Every connection's peer is checked again once made.
    The refusal of private addresses is dnsd.outbound's, shared with the closer's HEAD checks."""

    def __init__(self, prober: Prober, url_host: str, address: str | None, family: int | None,
                 sni: str):
        self.p, self.url_host, self.address, self.family, self.sni = prober, url_host, address, family, sni
        self.peer: tuple[str, int] | None = None

    def endpointForURI(self, uri):
        host = uri.host.decode("ascii").strip("[]").lower()
        timeout = self.p.connect_timeout
        if host == self.url_host and self.address:
            cls = TCP6ClientEndpoint if self.family == 6 else TCP4ClientEndpoint
            ep = cls(self.p.reactor, self.address, uri.port, timeout=timeout)
            sni = self.sni
        else:
            ep = outbound.ResolvedEndpoint(self.p.reactor, host, uri.port,
                                           allow_private=self.p.allow_private,
                                           connect_timeout=timeout, resolve=self.p.lookup)
            sni = host
        if uri.scheme == b"https":
            ep = wrapClientTLS(optionsForClientTLS(sni, trustRoot=self.p.trust_root), ep)
        return outbound.CheckedEndpoint(ep, allow_private=self.p.allow_private,
                                        on_peer=_Tracked(self))


class _Tracked:
    """Remembers where the pinned fetch connected (the address recorded with the result)."""

    def __init__(self, owner: _PinnedEndpoints):
        self.owner = owner

    def __call__(self, host: str) -> None:
        self.owner.peer = (host, 6 if ":" in host else 4)


class _DaemonThreadPool(ThreadPool):
    """Threads that never hold up the process's exit. A getaddrinfo call cannot be cancelled and
    can hang for 30 s and more on a dead resolver; on the reactor's own pool it would keep a
    stopping node waiting for it (the reactor joins that pool), here it is simply abandoned."""

    def threadFactory(self, *args, **kwargs):
        t = threading.Thread(*args, **kwargs)
        t.daemon = True
        return t


def system_resolver(reactor, threads: int = 10) -> GAIResolver:
    """The system's resolver (getaddrinfo: /etc/hosts, resolv.conf) on a daemon thread pool."""
    pool = _DaemonThreadPool(minthreads=0, maxthreads=threads, name="mirrordns-probe-resolve")
    pool.start()
    return GAIResolver(reactor, getThreadPool=lambda: pool)


class NameLookupError(Exception):
    """The host name gave no address (no such name, no records, no answer in time)."""


class AddressResolver:
    """A host name's addresses, IPv4 and IPv6, as text. With `[probes] nameservers` they are asked
    directly (twisted.names; tests run one on 127.0.0.1), else the system's resolver
    (system_resolver: getaddrinfo on daemon threads, so /etc/hosts counts and a hung lookup never
    holds up a stopping node)."""

    def __init__(self, reactor, nameservers=(), system=None):
        self.reactor = reactor
        self._system = system          # an IHostnameResolver; None: system_resolver, on first use
        self._names = None
        if nameservers:
            from twisted.names import client

            from dnsd.config import split_hostport
            servers = [split_hostport(hp, "[probes] nameservers") for hp in nameservers]
            self._names = client.Resolver(servers=servers, reactor=reactor)

    async def resolve(self, host: str, timeout: float) -> list[str]:
        if self._names is None:
            if self._system is None:
                self._system = system_resolver(self.reactor)
            receiver = outbound.AddressReceiver()
            self._system.resolveHostName(receiver, host)
            # getaddrinfo cannot be cancelled: past the probe's time its thread is left alone
            found = await receiver.done.addTimeout(max(0.1, timeout), self.reactor)
        else:
            found = await self._ask(host, timeout)
        out = list(dict.fromkeys(a.split("%", 1)[0] for a in found))
        if not out:
            raise NameLookupError(f"{host} has no address")
        return out

    async def _ask(self, host: str, timeout: float) -> list[str]:
        import socket

        from twisted.names import dns
        from twisted.names import error as nerror

        t = (max(0.1, timeout),)
        found: list[str] = []
        for lookup, rtype in ((self._names.lookupAddress, dns.A),
                              (self._names.lookupIPV6Address, dns.AAAA)):
            try:
                ans, _auth, _add = await lookup(host, timeout=t)
            except (nerror.DNSNameError, nerror.DNSServerError, nerror.DNSQueryRefusedError,
                    nerror.DNSFormatError, nerror.DNSNotImplementedError, nerror.DNSUnknownError,
                    defer.TimeoutError, nerror.DNSQueryTimeoutError):
                continue
            for rr in ans:
                if rr.type == rtype == dns.A:
                    found.append(socket.inet_ntop(socket.AF_INET, rr.payload.address))
                elif rr.type == rtype == dns.AAAA:
                    found.append(socket.inet_ntop(socket.AF_INET6, rr.payload.address))
        return found


class _BoundedBody(protocol.Protocol):
    """Collects a response body up to `limit` bytes; cancelling or overflowing drops the connection.
    With `digest` (a hashlib object) the bytes only go through it and are not kept: a canary
    file of many megabytes costs its hash, not its size in memory."""

    def __init__(self, limit: int, digest=None):
        self.limit, self.parts, self.size, self.digest = limit, [], 0, digest
        self.done: defer.Deferred[bytes] = defer.Deferred(self._cancel)

    def _cancel(self, _d):
        if self.transport is not None:
            self.transport.stopProducing()

    def dataReceived(self, data: bytes):
        if self.done.called:
            return
        self.size += len(data)
        if self.size > self.limit:
            self.transport.stopProducing()
            self.done.errback(BodyTooLarge(f"body over {self.limit} bytes"))
            return
        if self.digest is not None:
            self.digest.update(data)
        else:
            self.parts.append(data)

    def connectionLost(self, reason=protocol.connectionDone):
        if self.done.called:
            return
        if reason.check(wclient.ResponseDone, wclient.PotentialDataLoss):
            self.done.callback(b"".join(self.parts))
        else:
            self.done.errback(reason)


def classify(f: Failure) -> tuple[str, str]:
    """(error class, short message) for a failed fetch."""
    inner = _flatten(f)
    for x in inner:
        if x.check(outbound.PrivateAddressRefused):
            return "private-address", str(x.value)
    for x in inner:
        if x.check(SSL.Error):
            return "tls", _ssl_text(x.value)
        if x.check(VerificationError, CertificateError):
            return "tls", "TLS: the certificate does not cover this name"
    for x in inner:
        if x.check(BodyTooLarge):
            return "too-large", str(x.value)
        if x.check(ierror.DNSLookupError):
            return "dns", "name does not resolve"
        if x.check(ierror.ConnectionRefusedError):
            return "refused", "connection refused"
        if x.check(ierror.TimeoutError, defer.CancelledError, defer.TimeoutError,
                   ierror.TCPTimedOutError, ierror.ConnectingCancelledError):
            return "timeout", "no complete answer in time"
    for x in inner:
        if x.check(ierror.ConnectError):
            return "refused", str(x.value).strip() or "connection failed"
    last = inner[-1] if inner else f
    return "error", (f"{type(last.value).__name__}: {last.value}".strip())[:300]


def _flatten(f: Failure) -> list[Failure]:
    out = [f]
    reasons = getattr(f.value, "reasons", None)
    if reasons:
        for r in reasons:
            if isinstance(r, Failure):
                out.extend(_flatten(r))
    return out


def _ssl_text(e) -> str:
    try:
        bits = [" ".join(str(p) for p in a if p) for a in e.args[0]]
        return "TLS: " + "; ".join(bits)[:200]
    except Exception:
        return "TLS handshake failed"


def _with_port(host: str, url: str) -> str:
    """The Host header value: a name, plus the port when the URL has a non-default one."""
    u = urlsplit(url)
    default = 443 if u.scheme == "https" else 80
    if ":" in host:                             # an IPv6 literal as the URL's host
        host = f"[{host}]"
    return host if u.port in (None, default) else f"{host}:{u.port}"


class CanaryUnavailable(Exception):
    """The origin did not tell the canary's size and SHA-256 (this cycle goes without)."""


@dataclass
class _Got:
    """What one GET answered, beside its Fetch: for the caller to judge."""
    status: int | None = None
    phrase: str = ""
    ttfb: float | None = None
    headers: Headers | None = None
    length: int | None = None            # Content-Length, when the answer declared one
    body: bytes = b""
    size: int = 0                        # body bytes read (or hashed)

    def header(self, name: bytes) -> str | None:
        v = self.headers.getRawHeaders(name) if self.headers is not None else None
        return v[0].decode("latin-1") if v else None

    def total_size(self) -> int | None:
        """The whole file's size: from Content-Range for a 206, else the Content-Length."""
        if self.status == 206:
            return content.content_range_total(self.header(b"content-range"))
        return self.length


def _below(base: str, path: str) -> str:
    """`path` below a base URL (which may or may not end in '/')."""
    u = urlsplit(base)
    folder = u.path if u.path.endswith("/") else u.path + "/"
    return urlunsplit((u.scheme, u.netloc, folder + path.lstrip("/"), "", ""))


class Prober:
    """Probes one mirror at a time (`probe(target)` returns a Deferred); holds no state between
    probes except its configuration and `canary` (what the origin publishes about the canary
    file, set by the loop once per cycle from `load_canary`), so one instance serves the whole
    loop."""

    def __init__(self, cfg, reactor, geo=None, trust_root=None, resolver=None, rng=None):
        p = cfg.probes
        self.reactor = reactor
        # a host name's addresses: [probes] nameservers, else `resolver` (an IHostnameResolver,
        # tests pass one) or the system's, made on first use: most mirrors pin their addresses
        self.resolver = AddressResolver(reactor, p.nameservers, system=resolver)
        self.geo = geo
        self.trust_root = trust_root            # None = the platform's CAs
        self.timeout = p.timeout
        self.connect_timeout = min(p.connect_timeout, p.timeout)
        self.path = p.timestamp_path
        self.fmt = p.timestamp_format
        self.max_age = serving.max_sync_age(cfg)
        self.cfg = cfg
        self.max_body = p.max_body
        self.follow = p.follow_redirects
        self.allow_private = p.allow_private
        self.user_agent = p.user_agent.encode()
        self._pool = wclient.HTTPConnectionPool(reactor, persistent=False)
        # content checks (probes.content)
        self.rng = rng or random.Random()
        self.not_found_check = p.not_found_check
        self.mirror_info_check = p.mirror_info_check and p.timestamp_format == "phpnet"
        self.canary_path = p.canary_path.lstrip("/")
        self.canary_origin = canary_origin(cfg)
        self.canary_full_share = p.canary_full_share
        self.canary: Canary | None = None

    async def lookup(self, host: str, timeout: float) -> list[str]:
        """A followed redirect's host, for dnsd.outbound.ResolvedEndpoint."""
        try:
            return await self.resolver.resolve(host, timeout)
        except NameLookupError:
            raise ierror.DNSLookupError(host) from None

    def probe(self, target: Target) -> defer.Deferred[ProbeResult]:
        """Cancelling the Deferred abandons the probe at once (sockets closed, a host name
        lookup left to finish on its own thread)."""
        return defer.ensureDeferred(self._probe(target))

    def timestamp_url(self, base: str) -> str:
        return _below(base, self.path)

    async def _probe(self, t: Target) -> ProbeResult:
        start = self.reactor.seconds()
        deadline = start + self.timeout
        bases = [("http", t.http_url), ("https", t.https_url)]
        if not any(base for _s, base in bases):
            return ProbeResult(mirror_id=t.mirror_id, at=start, ok=False, error_class="error",
                               error="the mirror has no http or https URL")
        if t.pinned:
            v4, v6, resolved = t.ipv4, t.ipv6, False
        else:
            try:
                v4, v6 = await self._resolve(t, deadline)
            except _Unresolved as e:
                return ProbeResult(mirror_id=t.mirror_id, at=start, ok=False,
                                   error_class=e.error_class, error=str(e), resolved=True)
            resolved = True
        addresses = [(a, fam) for a, fam in ((v4, 4), (v6, 6)) if a]
        combos = [(scheme, self.timestamp_url(base), a, fam)
                  for scheme, base in bases if base for a, fam in addresses]
        # The extra names are virtual-host (and certificate) settings of the web server, not of an
        # address, so they are checked once per scheme, over the first address.
        firsts = {}
        for scheme, _url, a, _fam in combos:
            firsts.setdefault(scheme, a)
        runs = await defer.gatherResults(
            [defer.ensureDeferred(self._combo(t, url, a, fam, deadline, names=firsts[s] == a))
             for s, url, a, fam in combos])
        checks = await self._content(t, bases, combos, runs, deadline)
        return replace(self._summarise(t, start, combos, runs, v4, v6, checks),
                       resolved=resolved, probed_ipv4=v4, probed_ipv6=v6)

    async def _resolve(self, t: Target, deadline: float) -> tuple[str | None, str | None]:
        """(IPv4, IPv6) to probe a mirror without pinned addresses over: the IP literals of its
        host name or URLs as they are, else what its host name resolves to now (the lowest public
        address of each family, so a name that rotates its records does not move the plan)."""
        hosts = [t.hostname] + [urlsplit(u).hostname or "" for u in (t.http_url, t.https_url) if u]
        found = [lit for h in hosts if (lit := ip_literal(h))]
        if not found:
            try:
                found = await self.resolver.resolve(t.hostname, deadline - self.reactor.seconds())
            except NameLookupError:
                raise _Unresolved("dns", f"{t.hostname} does not resolve") from None
            except defer.CancelledError:  # cut short (a stop): a result like a fetch's
                raise _Unresolved("timeout", f"{t.hostname}: no answer in time") from None
            except Exception as e:
                raise _Unresolved("dns", f"{t.hostname}: no answer from the resolver "
                                         f"({type(e).__name__})") from None
        usable = [a for a in found if self.allow_private or not is_forbidden_address(a)]
        if not usable:
            raise _Unresolved("private-address", f"{t.hostname} is {found[0]}, not a public "
                                                 "address (probes.allow_private)")
        key = ipaddress.ip_address
        v4 = sorted((a for a in usable if ":" not in a), key=key)
        v6 = sorted((a for a in usable if ":" in a), key=key)
        return (v4[0] if v4 else None), (v6[0] if v6 else None)

    async def _combo(self, t: Target, url: str, address, family, deadline,
                     names: bool = True) -> list[Fetch]:
        """The fetch with the mirror's own name, then (if that worked) one per extra name."""
        own = (urlsplit(url).hostname or t.hostname).lower()
        main = await self._fetch(url, own, address, family, deadline)
        if not main.ok or not names:
            return [main]
        extra = [n for n in t.names if n != own]
        others = await defer.gatherResults(
            [defer.ensureDeferred(self._fetch(url, n, address, family, deadline)) for n in extra])
        checked = []
        for f in others:
            if f.ok and f.timestamp != main.timestamp:
                f = replace(f, error_class="wrong-host",
                            error=f"serves another site for {f.host} (timestamp differs)")
            elif not f.ok and f.error_class in ("http-status", "no-timestamp", "too-large"):
                f = replace(f, error_class="wrong-host",
                            error=f"does not serve {f.host}: {f.error_class}"
                                  + (f" {f.status}" if f.status else ""))
            checked.append(f)
        return [main, *checked]

    async def _get(self, url: str, name: str, address, family, deadline, *, limit: int,
                   keep=(200,), headers=(), digest=None, check: str = "") -> tuple[Fetch, _Got]:
        """One GET of `url` with Host `name` over `address` (None: the URL's host resolved here,
        behind the same refusal of private addresses), within the probe's deadline. The body of
        an answer whose status is in `keep` is read (at most `limit` bytes, or only hashed into
        `digest`), any other body dropped unread. The Fetch carries transport errors; what the
        answer means is the caller's."""
        host = _with_port(name, url)
        base = Fetch(url=url, host=host, address=address, family=family, check=check)
        got = _Got()
        if address and not self.allow_private and is_forbidden_address(address):
            return replace(base, error_class="private-address",
                           error=f"{address} is not a public address (probes.allow_private)"), got
        start = self.reactor.seconds()
        remaining = deadline - start
        if remaining <= 0:
            return replace(base, error_class="timeout", error="no time left in this probe"), got
        https = url.startswith("https:")
        # The request goes to the name itself (so Host, SNI and any followed redirect are right),
        # over a connection pinned to the table address.
        u = urlsplit(url)
        ascii_host = host if host.isascii() else _with_port(name.encode("idna").decode(), url)
        request_url = urlunsplit((u.scheme, ascii_host, quote(u.path, safe="/%:@!$&'()*+,;=~"),
                                  u.query, ""))
        pinned = _PinnedEndpoints(self, name, address, family, name)
        agent = wclient.Agent.usingEndpointFactory(self.reactor, pinned, pool=self._pool)
        if self.follow:
            agent = wclient.RedirectAgent(agent, redirectLimit=5)
        hdrs = Headers({b"user-agent": [self.user_agent], b"accept": [b"text/plain, */*"],
                        b"cache-control": [b"no-cache"]})
        for k, v in headers:
            hdrs.setRawHeaders(k, [v])
        current = [agent.request(b"GET", request_url.encode("ascii"), hdrs)]
        timer = self.reactor.callLater(remaining, lambda: current[0].cancel())
        try:
            resp = await current[0]
            got.ttfb = (self.reactor.seconds() - start) * 1000
            got.status = resp.code
            got.phrase = resp.phrase.decode("latin-1", "replace")
            got.headers = resp.headers
            got.length = None if resp.length is wclient.UNKNOWN_LENGTH else resp.length
            if got.status not in keep:
                resp.deliverBody(_Discard())
            else:
                if digest is None and got.length is not None and got.length > limit:
                    resp.deliverBody(_Discard())
                    raise BodyTooLarge(f"Content-Length {got.length} over {limit} bytes")
                reader = _BoundedBody(limit, digest)
                resp.deliverBody(reader)
                current[0] = reader.done
                got.body = await reader.done
                got.size = reader.size
        except Exception:
            ec, msg = classify(Failure())
            tls = (False if ec == "tls" else (True if got.status else None)) if https else None
            return self._done(base, pinned, start, status=got.status, ttfb=got.ttfb,
                              tls_ok=tls, error_class=ec, error=msg), got
        finally:
            if timer.active():
                timer.cancel()
        return self._done(base, pinned, start, status=got.status, ttfb=got.ttfb,
                          tls_ok=True if https else None), got

    async def _fetch(self, url: str, name: str, address, family, deadline) -> Fetch:
        """The timestamp file: 200 and a timestamp in the configured format."""
        f, got = await self._get(url, name, address, family, deadline, limit=self.max_body)
        if not f.ok:
            return f
        if got.status != 200:
            err = f"HTTP {got.status} {got.phrase}"
            if 300 <= got.status < 400 and (loc := got.header(b"location")):
                err += f" (redirect to {loc})"
            return replace(f, error_class="http-status", error=err)
        body = got.body
        ts = parse_timestamp(body, self.fmt)
        now = self.reactor.seconds()
        if ts is None:
            return replace(f, error_class="no-timestamp",
                           error=f"no {self.fmt} timestamp in {len(body)} bytes: {body[:40]!r}")
        if ts > now + FUTURE_SLACK:
            return replace(f, error_class="no-timestamp",
                           error=f"timestamp {int(ts)} lies in the future")
        if self.mirror_info_check:
            try:
                return replace(f, timestamp=ts, mirror_info=content.parse_mirror_info(body))
            except MirrorInfoError as e:
                return replace(f, timestamp=ts, mirror_info_error=str(e))
        return replace(f, timestamp=ts)

    # --- content checks (probes.content) ---------------------------------------------------------

    async def _content(self, t: Target, bases, combos, runs, deadline) -> list[Fetch]:
        """The content checks, once per probe, over the first address that served the main
        scheme's timestamp: the page it read (mirror-info), a random path (404) and the canary.
        Nothing when the timestamp check failed: that failure says enough."""
        main_scheme = "http" if t.http_url else "https"
        ok = [(c, r) for c, r in zip(combos, runs) if c[0] == main_scheme and all(f.ok for f in r)]
        if not ok:
            return []
        (_scheme, _url, address, family), run = ok[0]
        base = dict(bases)[main_scheme]
        own = (urlsplit(base).hostname or t.hostname).lower()
        out: list[Fetch] = []
        if self.mirror_info_check:
            out.append(self._mirror_info_fetch(t, run[0]))
        jobs = []
        if self.not_found_check:
            jobs.append(self._check_404(base, own, address, family, deadline))
        canary = self.canary
        if canary is not None and canary.expected_of(run[0].timestamp):
            full = self.rng.random() < self.canary_full_share
            jobs.append(self._check_canary(canary, base, own, address, family, deadline, full))
        out += await defer.gatherResults([defer.ensureDeferred(j) for j in jobs])
        return out

    def _mirror_info_fetch(self, t: Target, main: Fetch) -> Fetch:
        """The timestamp fetch read again as php.net's /mirror-info line, for its fields."""
        info = main.mirror_info
        if info is None:
            problem = main.mirror_info_error or "no /mirror-info line"
        else:
            problem = content.mirror_info_problem(info, (t.hostname, *t.names))
        f = replace(main, check="mirror-info", timestamp=None,
                    note=f"PHP {info.php_version}, language {info.language}" if info else "")
        if problem:
            f = replace(f, error_class="mirror-info", error=problem)
        return f

    async def _check_404(self, base, name, address, family, deadline) -> Fetch:
        url = _below(base, content.random_path(self.rng))
        f, got = await self._get(url, name, address, family, deadline, limit=0, keep=(),
                                 check="404")
        if not f.ok:
            return f
        if problem := content.not_found_problem(got.status):
            return replace(f, error_class="soft-404", error=problem)
        return replace(f, note="a file that does not exist is not found, as it should be")

    async def _check_canary(self, canary: Canary, base, name, address, family, deadline,
                            full: bool) -> Fetch:
        """One byte of the canary (the total size is in Content-Range), or all of it hashed."""
        url = _below(base, canary.path)
        if full:
            digest = hashlib.sha256()
            f, got = await self._get(url, name, address, family, deadline,
                                     limit=canary.size, digest=digest, check="canary")
            if f.error_class == "too-large":
                return replace(f, error_class="canary-size",
                               error=content.size_problem(canary, canary.size + 1))
            size = got.size
        else:
            f, got = await self._get(url, name, address, family, deadline, limit=0, keep=(),
                                     headers=[(b"range", b"bytes=0-0")], check="canary-range")
            size = got.total_size()
        if not f.ok:
            return f
        if got.status not in (200, 206):
            return replace(f, error_class="canary-missing",
                           error=f"{canary.path}: HTTP {got.status} {got.phrase}")
        if problem := content.size_problem(canary, size):
            return replace(f, error_class="canary-size", error=problem)
        if full:
            if problem := content.hash_problem(canary, digest.hexdigest()):
                return replace(f, error_class="canary-hash", error=problem)
            return replace(f, note=f"{canary.path}: {size} bytes, SHA-256 as published")
        return replace(f, note=f"{canary.path}: {size} bytes, as published")

    async def load_canary(self) -> Canary:
        """What the origin publishes about the canary: its size and Last-Modified (a Range
        request for one byte of `<origin>/<canary_path>`) and its SHA-256
        (`<origin>/<canary_path>.sha256`). Raises CanaryUnavailable with the reason."""
        if not self.canary_path or not self.canary_origin:
            raise CanaryUnavailable("no [probes] canary_path")
        deadline = self.reactor.seconds() + self.timeout
        url = _below(self.canary_origin, self.canary_path)
        host = (urlsplit(url).hostname or "").lower()
        (f, got), (sf, sgot) = await defer.gatherResults([
            defer.ensureDeferred(self._get(url, host, None, None, deadline, limit=0, keep=(),
                                           headers=[(b"range", b"bytes=0-0")])),
            defer.ensureDeferred(self._get(url + ".sha256", host, None, None, deadline,
                                           limit=self.max_body))])
        for x, g in ((f, got), (sf, sgot)):
            if not x.ok:
                raise CanaryUnavailable(f"{x.url}: {x.error_class}: {x.error}")
            if g.status not in (200, 206):
                raise CanaryUnavailable(f"{x.url}: HTTP {g.status} {g.phrase}")
        size = got.total_size()
        if size is None:
            raise CanaryUnavailable(f"{url}: the origin does not say how large it is")
        sha = checksums.digest_of(sgot.body, self.canary_path, "sha256")
        if sha is None:
            raise CanaryUnavailable(f"{sf.url}: no SHA-256 for {self.canary_path} in it")
        modified = got.header(b"last-modified")
        published = _rfc2822(modified) if modified else None
        return Canary(self.canary_path, size, sha, published)

    def _done(self, base: Fetch, pinned: _PinnedEndpoints, start, *, status, ttfb, tls_ok,
              timestamp=None, error_class="", error="") -> Fetch:
        address, family = pinned.peer if pinned.peer else (base.address, base.family)
        return replace(base, address=address, family=family, status=status, ttfb_ms=ttfb,
                       total_ms=(self.reactor.seconds() - start) * 1000, timestamp=timestamp,
                       tls_ok=tls_ok, error_class=error_class, error=error)

    def _summarise(self, t: Target, start, combos, runs, v4, v6, checks=()) -> ProbeResult:
        """The verdict input: the main scheme (http if the mirror has it) must serve a fresh file
        over at least one address, and pass the content checks; per-family and https health are
        recorded beside it (the content checks say nothing about those)."""
        main_scheme = "http" if t.http_url else "https"
        ok_runs = [(c, r) for c, r in zip(combos, runs) if all(f.ok for f in r)]
        main_ok = [(c, r) for c, r in ok_runs if c[0] == main_scheme]
        fam_up = {}
        for fam, addr in ((4, v4), (6, v6)):
            if addr:
                fam_up[fam] = any(c[3] == fam for c, _r in ok_runs)
        https_ok = None
        if t.https_url:
            https_ok = any(c[0] == "https" for c, _r in ok_runs)
        fetches = tuple(f for r in runs for f in r)
        tls_vals = [f.tls_ok for f in fetches if f.tls_ok is not None]
        if main_ok:
            (_c, r) = main_ok[0]
            first, ec, err = r[0], "", ""
        else:
            mains = [(c, r) for c, r in zip(combos, runs) if c[0] == main_scheme]
            r = mains[0][1]
            bad = next(f for f in r if not f.ok)
            first, ec, err = r[0], bad.error_class, bad.error
        ts = first.timestamp
        sync_age = max(0.0, start - ts) if ts is not None else None
        if (not ec and sync_age is not None and sync_age > self.max_age
                and serving.age_filtered(t, self.cfg)):
            ec, err = "stale", f"out of sync {fmt_age(sync_age)} (limit {fmt_age(self.max_age)})"
        if not ec and (bad := next((f for f in checks if not f.ok), None)) is not None:
            ec, err = bad.error_class, bad.error
        info = next((f.mirror_info for f in checks if f.mirror_info is not None), None)
        return ProbeResult(
            mirror_id=t.mirror_id, at=start, ok=not ec, error_class=ec, error=err, url=first.url,
            address=first.address, family=first.family, http_status=first.status,
            ttfb_ms=first.ttfb_ms, total_ms=first.total_ms, timestamp=ts, sync_age=sync_age,
            tls_ok=all(tls_vals) if tls_vals else None, ipv4_up=fam_up.get(4), ipv6_up=fam_up.get(6),
            https_ok=https_ok, geo_check=self.geo_check(t, v4, v6),
            fetches=fetches + tuple(checks), mirror_info=info)

    def geo_check(self, t: Target, v4=None, v6=None) -> str:
        """'' when every probed address geolocates to the claimed country (or is unknown)."""
        if self.geo is None or not t.country:
            return ""
        bad = []
        for a in (v4, v6) if (v4 or v6) else (t.ipv4, t.ipv6):
            if not a:
                continue
            try:
                cc = self.geo.country(a)
            except Exception:
                cc = None
            if cc and cc.upper() != t.country.upper():
                bad.append(f"{a} in {cc.upper()}, not {t.country.upper()}")
        return "; ".join(bad)


class _Discard(protocol.Protocol):
    """Drops a body we do not want and closes the connection."""

    def connectionMade(self):
        self.transport.stopProducing()

    def dataReceived(self, data):
        pass

    def connectionLost(self, reason=protocol.connectionDone):
        pass
