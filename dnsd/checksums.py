"""Checksum files as projects publish them beside their releases: one reader for the probes'
canary (what the origin publishes) and the closer's Metalink hashes (what the dist tree holds).

Accepted: `sha256sum` / `sha512sum` output (`<hex>  <name>`, `<hex> *<name>`), the BSD form
(`SHA256 (<name>) = <hex>`), or the hex alone. With several lines the one naming the file wins;
a lone line of the right length counts whatever name it gives.
"""

from __future__ import annotations

import re

HEX_LENGTH = {"sha256": 64, "sha512": 128}
_BSD = re.compile(r"^SHA(?:256|512)\s*\((?P<name>.+)\)\s*=\s*(?P<hex>[0-9a-fA-F]+)$")
_HEX = re.compile(r"[0-9a-fA-F]+")


def digest_of(body: bytes, name: str, algorithm: str = "sha256") -> str | None:
    """The hex digest (lower case) of file `name` (its last path part counts) in a checksum
    file's text, or None when the file does not give one."""
    want = HEX_LENGTH[algorithm]
    base = name.rsplit("/", 1)[-1]
    found: list[tuple[str, str]] = []
    for line in body.decode("utf-8", "replace").splitlines():
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        m = _BSD.match(line)
        hexd, fname = (m["hex"], m["name"]) if m else (line.split()[0], line[len(line.split()[0]):])
        if len(hexd) == want and _HEX.fullmatch(hexd):
            found.append((hexd.lower(), fname.strip().lstrip("*").rsplit("/", 1)[-1]))
    for hexd, fname in found:
        if fname == base:
            return hexd
    return found[0][0] if len(found) == 1 else None
