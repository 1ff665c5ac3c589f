"""The HTTP layer under every page: a request is bounded before any page code sees it.

Twisted's own `Site` reads a whole body into memory (or a temporary file) whatever its size,
parses a form body on the reactor thread before the resource is even found, keeps a slow client
as long as it sends a byte a minute, and announces its version. `WebSite` is a Site with the
listener's limits ([admin] max_body, request_timeout, idle_timeout):

- **Bodies.** No page takes more than `max_body` bytes. A declared Content-Length over the limit
  is answered 413 as soon as the headers are in, before a byte of the body is read; a chunked body
  is cut off with 413 the moment it passes the limit. The body is kept in memory (it is small
  now) and never parsed by Twisted: the page that wants a form reads it with `body_form`, bounded
  in fields, so a route without a form costs nothing for what a client sent; a route that takes
  no body (every GET) refuses one (`has_body`, admin.web.framework.Router), and a method no
  route takes gets 405 with the route's Allow.
- **Headers.** At most `MAX_HEADERS` header lines and `MAX_HEADER_BYTES` bytes for the request
  line and headers together (400 beyond; 431 for one line longer than that), at most
  `MAX_FORM_FIELDS` query parameters (414) and `MAX_COOKIES` cookies (431): Twisted parses
  both on the reactor before any page runs.
- **Time.** A request must arrive whole within `request_timeout` of its first byte (slow headers,
  slow bodies: 408 and the connection is closed); a kept-alive connection without a request is
  closed after `idle_timeout`.
- **No banner.** No `Server: TwistedWeb/<version>` header; errors Twisted itself would answer
  (an unsupported method, an exception escaping a resource) get the site's own pages.

After a refusal the server stops answering on the connection but keeps reading and discarding for
up to `LINGER` seconds or `LINGER_BYTES`, so a client still sending its body sees the 413
instead of a reset, and one that goes on pushing costs at most that.
"""

from __future__ import annotations

import io
import json
from dataclasses import dataclass
from urllib.parse import unquote_to_bytes

from twisted.logger import Logger
from twisted.web import http, server
from twisted.web.error import UnsupportedMethod

_log = Logger(namespace="admin.web.limits")

MAX_HEADERS = 100
MAX_HEADER_BYTES = 16384          # request line + headers (also the longest line Twisted reads)
MAX_FORM_FIELDS = 1000           # fields of a form body, and of a query string
MAX_COOKIES = 100
LINGER = 2.0                      # seconds a refused client may go on sending before we hang up
LINGER_BYTES = 1 << 16            # ... and bytes: a client still pushing after that is cut off

FORM_TYPE = b"application/x-www-form-urlencoded"
BODY_METHODS = (b"POST", b"PATCH", b"PUT")    # the methods whose routes may take a body


@dataclass(frozen=True)
class Limits:
    max_body: int = 65536
    request_timeout: float = 10.0
    idle_timeout: float = 30.0

    @classmethod
    def from_config(cls, cfg) -> Limits:
        a = cfg.admin
        return cls(max_body=a.max_body, request_timeout=a.request_timeout,
                   idle_timeout=a.idle_timeout)


JSON_PREFIXES = (b"/api/",)          # answered in JSON, as the API documents its errors


def _status(code: int, body: bytes, path: bytes = b"") -> bytes:
    """A whole refusal, in JSON for the API's paths, else one line of text."""
    reason = http.RESPONSES.get(code, b"Error")
    ctype = b"text/plain; charset=utf-8"
    if path.startswith(JSON_PREFIXES):
        body = json.dumps({"error": body.decode().strip()}).encode()
        ctype = b"application/json"
    return (b"HTTP/1.1 %d %s\r\ncontent-type: %s\r\ncontent-length: %d\r\n"
            b"connection: close\r\n\r\n%s" % (code, reason, ctype, len(body), body))


class LimitedChannel(http.HTTPChannel):
    """HTTPChannel with the body limit, the per-request deadline and a polite refusal."""

    maxHeaders = MAX_HEADERS
    totalHeadersSize = MAX_HEADER_BYTES

    def __init__(self, limits: Limits):
        super().__init__()
        self.limits = limits
        self.body_limit = 0
        self._deadline = None
        self._refused = False
        self._drained = 0

    # -- the whole request within request_timeout of its first byte --
    def dataReceived(self, data):
        if self._refused:                       # lingering: read and forget, a while
            self._drained += len(data)
            if self._drained > LINGER_BYTES and self.transport is not None:
                self.transport.abortConnection()
            return
        if self._deadline is None and not self._handlingRequest:
            self._deadline = self.callLater(self.limits.request_timeout, self._too_slow)
        super().dataReceived(data)

    def _too_slow(self):
        self._deadline = None
        _log.info("request from {peer} not complete after {s} s: closed",
                  peer=str(self.transport.getPeer()), s=self.limits.request_timeout)
        self.refuse(408, b"the request did not arrive in time\n")

    def _stop_deadline(self):
        if self._deadline is not None:
            if self._deadline.active():
                self._deadline.cancel()
            self._deadline = None

    # -- the body limit, from the headers --
    def allHeadersReceived(self):
        # Twisted parses the query string and the cookies as soon as the headers are in, one
        # Python loop turn per field: bounded here, so no request line costs more than a moment
        if self._path.count(b"&") >= MAX_FORM_FIELDS:
            return self.refuse(414, b"too many query parameters\n")
        cookies = self.requests[-1].requestHeaders.getRawHeaders(b"cookie") or ()
        if sum(c.count(b";") for c in cookies) >= MAX_COOKIES:
            return self.refuse(431, b"too many cookies\n")
        limit = self.limits.max_body
        if self.length is not None and self.length > limit:   # chunked: WebRequest cuts it off
            return self.refuse(413, b"request body too large\n")
        self.body_limit = limit
        super().allHeadersReceived()

    def allContentReceived(self):
        if self._refused:
            return
        self._stop_deadline()
        super().allContentReceived()

    def _respondToBadRequestAndDisconnect(self):
        """Twisted's own 400 (a malformed request line or header, too many or too long headers),
        answered like every refusal here: a body that says so, and a lingering close."""
        self.refuse(400, b"bad request\n")

    def lineLengthExceeded(self, line):
        """A request line or header line over MAX_HEADER_BYTES (LineReceiver would just hang up)."""
        self.refuse(431, b"request header too large\n")

    def refuse(self, code: int, body: bytes) -> None:
        """Answer `code` and end the connection: no further request on it is parsed."""
        if self._refused:
            return
        self._refused = True
        self._stop_deadline()
        self.setTimeout(None)
        self._buffer = b""                      # LineReceiver: nothing more of this is parsed
        self.setRawMode()
        t = self.transport
        if t is None or t.disconnecting:
            return
        if not self._handlingRequest:
            t.write(_status(code, body, getattr(self, "_path", b"")))
        # FIN after the answer, then read and discard a while: closing with unread data would
        # reset the connection and the client might never see the answer
        t.loseWriteConnection()
        self._linger = self.callLater(LINGER, t.abortConnection)

    def connectionLost(self, reason):
        self._stop_deadline()
        linger = getattr(self, "_linger", None)
        if linger is not None and linger.active():
            linger.cancel()
        super().connectionLost(reason)


class WebRequest(server.Request):
    """A request whose body stays in memory, is never parsed by Twisted, and whose errors get the
    site's own pages."""

    def __init__(self, channel, *args, **kw):
        kw["parsePOSTFormSubmission"] = False
        super().__init__(channel, *args, **kw)

    def gotLength(self, length):
        self.content = io.BytesIO()             # at most max_body bytes: never a temporary file

    def handleContentChunk(self, data):
        if self.content.tell() + len(data) > getattr(self.channel, "body_limit", 0):
            self.channel.refuse(413, b"request body too large\n")
            return
        self.content.write(data)

    def write(self, data):
        if not self.startedWriting:
            self.responseHeaders.removeHeader(b"server")        # no version banner
        super().write(data)

    def render(self, resrc):
        try:
            body = resrc.render(self)
        except UnsupportedMethod as e:
            if self.method == b"HEAD" and b"GET" in e.allowedMethods:
                return super().render(resrc)                     # Twisted fakes HEAD from GET
            self.setHeader(b"allow", b", ".join(e.allowedMethods))
            return self._site_error(405)
        if body is server.NOT_DONE_YET:
            return
        if self.method != b"HEAD":
            self.setHeader(b"content-length", b"%d" % len(body))
            self.write(body)
        elif body:                              # a HEAD answer is GET's headers, no body
            self.setHeader(b"content-length", b"%d" % len(body))
        self.finish()

    def processingFailed(self, reason):
        _log.failure("processing {method} {uri}", reason, method=self.method, uri=self.uri)
        if self.startedWriting or self.finished:
            if self.channel is not None:        # half a response is out: end the connection
                self.channel.loseConnection()
            return reason
        self._site_error(500)
        return reason

    def _site_error(self, code: int) -> None:
        pages = getattr(self.site, "error_pages", None)
        if pages is not None:
            body, ctype = pages.page(self, code)
        else:
            body, ctype = b"error\n", b"text/plain; charset=utf-8"
        self.setResponseCode(code)
        self.setHeader(b"content-type", ctype)
        self.setHeader(b"content-length", b"%d" % len(body))
        if self.method != b"HEAD":
            self.write(body)
        self.finish()


class WebSite(server.Site):
    """The admin listener's Site: `LimitedChannel` connections, `WebRequest` requests.

    error_pages: an object with ``page(request, code) -> (body, content type)`` (the site's
    layout, admin.web.framework.ErrorPages), used for what Twisted would otherwise answer itself.
    """

    requestFactory = WebRequest

    def __init__(self, resource, limits: Limits, error_pages=None, **kw):
        super().__init__(resource, timeout=limits.idle_timeout, **kw)
        self.limits = limits
        self.error_pages = error_pages

    def protocol(self):
        """Plain HTTP/1.1 channels (no HTTP/2: the listener is plain TCP behind a proxy)."""
        return LimitedChannel(self.limits)


# --- reading what came ---------------------------------------------------------------------------

class FormError(ValueError):
    """A body the page cannot take as a form (the caller answers 400 or 415)."""


def has_body(request) -> bool:
    """The request came with a body (of any length)."""
    content = getattr(request, "content", None)
    if content is None:
        return False
    pos = content.tell()
    content.seek(0, 2)
    n = content.tell()
    content.seek(pos)
    return n > 0


def body_bytes(request) -> bytes:
    """The request body. The channel has refused anything over its limit; a request that came
    another way (treq's StubTreq in tests) is held to the default limit here."""
    limit = getattr(getattr(request, "channel", None), "body_limit", 0) or Limits.max_body
    content = getattr(request, "content", None)
    if content is None:
        return b""
    content.seek(0)
    raw = content.read(limit + 1)
    content.seek(0)
    if len(raw) > limit:
        raise FormError("request body too large")
    return raw


def body_form(request) -> dict[bytes, list[bytes]]:
    """The body (POST, PATCH, PUT) as a form, parsed once per request; an empty dict for other
    methods.

    Only application/x-www-form-urlencoded (what every form here sends); at most MAX_FORM_FIELDS
    fields, so parsing stays a matter of microseconds whatever a client sends.
    """
    cached = getattr(request, "_mirrordns_form", None)
    if cached is not None:
        return cached
    form: dict[bytes, list[bytes]] = {}
    if request.method in BODY_METHODS:
        raw = body_bytes(request)
        if raw:
            ctype = (request.getHeader(b"content-type") or b"").split(b";")[0].strip().lower()
            if ctype != FORM_TYPE:
                raise FormError("send the form as application/x-www-form-urlencoded")
            form = parse_fields(raw)
    request._mirrordns_form = form
    return form


def query_args(request) -> dict[bytes, list[bytes]]:
    """The URL's query string only (never a body), parsed once per request."""
    cached = getattr(request, "_mirrordns_query", None)
    if cached is not None:
        return cached
    uri = request.uri or b""
    q = uri.split(b"?", 1)[1] if b"?" in uri else b""
    try:
        args = parse_fields(q)
    except FormError:
        args = {}
    request._mirrordns_query = args
    return args


def parse_fields(raw: bytes) -> dict[bytes, list[bytes]]:
    """name=value&... as bytes (percent-decoded, '+' as space; blank values kept), at most
    MAX_FORM_FIELDS fields. Bytes stay bytes: the caller decodes, and refuses what is not
    UTF-8."""
    if raw.count(b"&") >= MAX_FORM_FIELDS:
        raise FormError(f"more than {MAX_FORM_FIELDS} form fields")
    out: dict[bytes, list[bytes]] = {}
    for item in raw.split(b"&"):
        if not item:
            continue
        k, _, v = item.partition(b"=")
        out.setdefault(unquote_to_bytes(k.replace(b"+", b" ")), []).append(
            unquote_to_bytes(v.replace(b"+", b" ")))
    return out
