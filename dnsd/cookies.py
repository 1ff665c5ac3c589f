"""DNS Cookies (RFC 7873) with the interoperable server cookie of RFC 9018.

A server cookie is 16 bytes: version 1, three reserved zero bytes, a 32-bit timestamp (seconds)
and SipHash-2-4, keyed with the 16-byte server secret, of client cookie | version | reserved |
timestamp | client address (RFC 9018 4). Any server of an anycast set holding the same secret,
whatever its software, accepts the cookies the others made.

`CookieJar.respond(client, server, src)` gives the server cookie for a reply and whether the
query's was valid: made with one of our secrets for this client cookie and address, at most an
hour old and at most five minutes from the future (RFC 9018 4.3). A valid cookie less than half an
hour old is sent back as it is; otherwise a fresh one is made (RFC 9018 4.3). An invalid or
missing server cookie is treated as a query with a client cookie only: it is answered normally
with a fresh server cookie (RFC 7873 5.2.3 and 5.2.4); only response rate limiting answers such a
query with BADCOOKIE (dnsd.answer).

Secrets come from `[dns] cookie_secret_file`: one secret per line, 32 hex digits. The first line
makes new cookies; every line is accepted when checking them. To roll a secret over on every node
(RFC 9018 5): add the new one as the second line; once every node has it, move it to the first
line; an hour later, remove the old one. The file is re-read when it changes. Without a file the
server draws a random secret at start and hands it to its worker processes (cookies then do not
survive a restart, nor agree between nodes).
"""

from __future__ import annotations

import os
import secrets
import socket
import time
from collections.abc import Callable, Sequence

from siphashc import siphash

_HEAD = b"\x01\x00\x00\x00"          # version 1, reserved
MAX_AGE = 3600                       # a cookie older than this is invalid (RFC 9018 4.3)
MAX_FUTURE = 300                     # ... and so is one from further in the future
REFRESH_AGE = 1800                   # a valid cookie older than this is replaced


class SecretError(Exception):
    """A cookie secret file that cannot be used, worded for the operator."""


def parse_secrets(text: str, where: str = "cookie secret file") -> list[bytes]:
    out = []
    for n, line in enumerate(text.splitlines(), 1):
        line = line.split("#", 1)[0].strip()
        if not line:
            continue
        try:
            key = bytes.fromhex(line)
        except ValueError:
            key = b""
        if len(key) != 16:
            raise SecretError(f"{where}:{n}: a secret is 32 hex digits (16 bytes)")
        out.append(key)
    if not out:
        raise SecretError(f"{where}: no secret in it")
    return out


def read_secrets(path: str) -> list[bytes]:
    try:
        with open(path, encoding="ascii") as f:
            return parse_secrets(f.read(), path)
    except (OSError, UnicodeDecodeError) as e:
        raise SecretError(f"{path}: cannot read the cookie secret file: {e}") from None


def _ip(src: str) -> bytes:
    return socket.inet_pton(socket.AF_INET6 if ":" in src else socket.AF_INET, src)


def _make(key: bytes, client: bytes, ip: bytes, stamp: bytes) -> bytes:
    """The RFC 9018 server cookie for a client cookie, address and 4-byte timestamp."""
    return b"".join((_HEAD, stamp, siphash(key, b"".join((client, _HEAD, stamp, ip)))
                     .to_bytes(8, "little")))


class CookieJar:
    """Makes and checks server cookies. The secrets are one tuple, replaced whole by `set_keys`
    (on whatever thread re-read the file) and read once per query, so a query answered on a UDP
    thread during a rotation uses the old secrets or the new ones, never a mix."""

    def __init__(self, keys: Sequence[bytes] | None = None,
                 clock: Callable[[], float] = time.time):
        self.keys: tuple[bytes, ...] = tuple(keys) if keys else (secrets.token_bytes(16),)
        self.clock = clock

    def set_keys(self, keys: Sequence[bytes]) -> None:
        if not keys:
            raise ValueError("at least one cookie secret is needed")
        self.keys = tuple(keys)

    @staticmethod
    def make(key: bytes, client: bytes, ip: bytes, ts: int) -> bytes:
        return _make(key, client, ip, (ts & 0xFFFFFFFF).to_bytes(4, "big"))

    def respond(self, client: bytes, server: bytes, src: str) -> tuple[bytes, bool]:
        """(server cookie for the reply, whether `server` was a valid cookie of ours)."""
        keys = self.keys                  # once: set_keys may replace it meanwhile
        now = int(self.clock())
        ip = _ip(src)
        if len(server) == 16 and server[:4] == _HEAD:
            stamp = server[4:8]
            age = (now - int.from_bytes(stamp, "big") + (1 << 31)) % (1 << 32) - (1 << 31)
            if -MAX_FUTURE <= age <= MAX_AGE:                          # (serial arithmetic)
                for i, key in enumerate(keys):
                    if _make(key, client, ip, stamp) == server:
                        if i == 0 and age <= REFRESH_AGE:
                            return server, True
                        return self.make(keys[0], client, ip, now), True
        return self.make(keys[0], client, ip, now), False


class SecretFile:
    """Re-reads the secret file when it changes (call `check()` off the reactor thread)."""

    def __init__(self, path: str, jar: CookieJar):
        self.path = path
        self.jar = jar
        self._stamp = None

    def check(self) -> bool:
        """Load the file if it changed; True when new keys were set. Raises SecretError."""
        st = os.stat(self.path)
        stamp = (st.st_mtime_ns, st.st_size, st.st_ino)
        if stamp == self._stamp:
            return False
        keys = read_secrets(self.path)
        self._stamp = stamp
        self.jar.set_keys(keys)
        return True
