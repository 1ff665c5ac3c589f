"""A deliberately dumb HTTP/1.1 client for attack tests: bytes go out exactly as written (no
normalising of paths, no percent-decoding, no header checks), and the answer is parsed loosely.
"""

from __future__ import annotations

import socket
import time
from dataclasses import dataclass, field


@dataclass
class Answer:
    status: int
    headers: dict[str, list[str]] = field(default_factory=dict)
    body: bytes = b""

    def header(self, name: str) -> str | None:
        v = self.headers.get(name.lower())
        return v[0] if v else None

    @property
    def text(self) -> str:
        return self.body.decode("utf-8", "replace")


def parse(raw: bytes) -> Answer:
    head, _, body = raw.partition(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    status = int(lines[0].split()[1])
    headers: dict[str, list[str]] = {}
    for line in lines[1:]:
        k, _, v = line.partition(":")
        headers.setdefault(k.strip().lower(), []).append(v.strip())
    n = headers.get("content-length")
    if n:
        body = body[: int(n[0])]
    return Answer(status, headers, body)


def read_answer(s: socket.socket, timeout: float = 10.0) -> bytes:
    """Bytes until one whole answer (by Content-Length) or EOF; raises TimeoutError."""
    s.settimeout(timeout)
    buf = b""
    deadline = time.monotonic() + timeout
    while True:
        if b"\r\n\r\n" in buf:
            head = buf.split(b"\r\n\r\n", 1)[0].lower()
            for line in head.split(b"\r\n"):
                if line.startswith(b"content-length:"):
                    want = int(line.split(b":", 1)[1])
                    if len(buf) >= len(head) + 4 + want:
                        return buf
        if time.monotonic() > deadline:
            raise TimeoutError(f"no whole answer in {timeout} s: {buf[:200]!r}")
        try:
            chunk = s.recv(65536)
        except ConnectionResetError:
            return buf
        if not chunk:
            return buf
        buf += chunk


def send(port: int, data: bytes, timeout: float = 10.0) -> Answer:
    """One request written as it is, one answer back."""
    with socket.create_connection(("127.0.0.1", port), timeout=timeout) as s:
        s.sendall(data)
        return parse(read_answer(s, timeout))


def request(port: int, method: str, target: bytes | str, headers: dict | None = None,
            body: bytes = b"", timeout: float = 10.0) -> Answer:
    if isinstance(target, str):
        target = target.encode("latin-1")
    h = {"Host": "mirrors.test", "Connection": "close", **(headers or {})}
    if body or method == "POST":
        h.setdefault("Content-Length", str(len(body)))
    out = method.encode() + b" " + target + b" HTTP/1.1\r\n"
    out += b"".join(f"{k}: {v}\r\n".encode("latin-1") for k, v in h.items())
    return send(port, out + b"\r\n" + body, timeout)


def closed_within(s: socket.socket, seconds: float) -> tuple[bool, bytes]:
    """(the server closed the connection within `seconds`, what it sent first)."""
    s.settimeout(0.2)
    got = b""
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        try:
            chunk = s.recv(65536)
        except TimeoutError:
            continue
        except (ConnectionResetError, BrokenPipeError):
            return True, got
        if not chunk:
            return True, got
        got += chunk
    return False, got
