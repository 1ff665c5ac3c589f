"""The closer's input: the query parameters of closer.cgi / closer.lua and the file path.

Everything a visitor sends is checked here before the choice sees it; what is refused is a
`BadRequest` (400, one line of text).
"""

from __future__ import annotations

import datetime as _dt
import re
from dataclasses import dataclass
from urllib.parse import quote

from admin.web.framework import HTTPError
from dnsd import countries

MAX_PATH = 1024
MAX_PARAM = 2048


class BadRequest(HTTPError):
    """Input we refuse (400, as one line of text) rather than guess at."""

    def __init__(self, message: str):
        super().__init__(400, f"bad request: {message}")


_BAD_CHARS = re.compile(r"[\x00-\x1f\x7f\\]")


def clean_path(raw: str) -> str:
    """A path below the distribution root, normalised; raises BadRequest for anything odd.

    Leading and doubled slashes go, a trailing slash (a folder) stays; '.', '..', control
    characters and backslashes are refused, so the path can neither climb out of the dist tree
    nor smuggle a header or markup through.
    """
    if len(raw) > MAX_PATH:
        raise BadRequest("path too long")
    if _BAD_CHARS.search(raw):
        raise BadRequest("path has control characters or backslashes")
    parts = [p for p in raw.split("/") if p]
    if any(p in (".", "..") for p in parts):
        raise BadRequest("path may not contain '.' or '..' segments")
    p = "/".join(parts)
    if p and raw.endswith("/"):
        p += "/"
    return p


def url_path(p: str) -> str:
    """The clean path as it goes into a URL: percent-encoded, '/' kept."""
    return quote(p, safe="/~-._+,=:@")


def _arg(args: dict, *names: str) -> str | None:
    for n in names:
        vals = args.get(n.encode())
        if vals:
            v = vals[0]
            if len(v) > MAX_PARAM:
                raise BadRequest(f"parameter {n} too long")
            try:
                return v.decode("utf-8")
            except UnicodeDecodeError:
                raise BadRequest(f"parameter {n} is not UTF-8") from None
    return None


def _flag(v: str | None) -> bool:
    """as_json / asjson: present and not '0' (the original's rule; '?asjson' alone counts)."""
    return v is not None and v != "0"


def parse_cca2(v: str | None) -> str | None:
    """'de' / 'DE' / 'uk' -> 'DE' / 'GB'; None when absent; BadRequest when not a country."""
    if v is None or v == "":
        return None
    v = v.strip().upper()
    if v == "UK":                       # the ASF's lists said uk for Great Britain
        v = "GB"
    if not re.fullmatch(r"[A-Z]{2}", v) or not countries.is_country(v):
        raise BadRequest("cca2 must be a two-letter country code")
    return v


def parse_ccode(v: str | None) -> str | None:
    """mirrors.cgi's `ccode`: two lower-case letters, else ignored (the original fell back to
    the visitor's own location rather than refusing)."""
    if v is None or not re.fullmatch(r"[a-z]{2}", v):
        return None
    try:
        return parse_cca2(v)
    except BadRequest:
        return None


UPDATE_FLOOR = _dt.timedelta(days=3)


def parse_update(v: str | None, now: _dt.datetime) -> _dt.datetime | None:
    """mirrors.cgi's `update=YYYYMMDDhhmm` (UTC): the preferred mirror must have synced since
    then; never a time more than three days before `now` (the original's floor). Anything else
    is ignored, as the original ignored it."""
    if not v or not re.fullmatch(r"\d{12}", v):
        return None
    try:
        t = _dt.datetime.strptime(v, "%Y%m%d%H%M")
    except ValueError:
        return None
    return max(t, now - UPDATE_FLOOR)


@dataclass(slots=True)
class Params:
    preferred: str | None       # a URL the visitor asked for (only used if it is listed)
    preferred_text: bool        # preferred=true: the bare URL as text/plain
    cca2: str | None            # choose as if from this country (cca2, else mirrors.cgi's ccode)
    path: str | None            # overrides the path after the script name
    as_json: bool
    action: str | None
    filename: str | None
    update: str | None = None   # mirrors.cgi's update=YYYYMMDDhhmm (parse_update)
    archive_aware: bool = False  # closer.lua's archive_aware: look the path up in the archive


def parse_params(args: dict, uri: bytes = b"") -> Params:
    prefs = [_arg(args, "Preferred"), _arg(args, "preferred")]
    action = _arg(args, "action")
    filename = _arg(args, "filename")
    path = _arg(args, "path")
    as_json = _arg(args, "as_json", "asjson")
    if as_json is None and b"?" in uri:
        # '?asjson' alone: twisted.web drops query items without '=', the original did not
        query = uri.split(b"?", 1)[1]
        if any(item in (b"asjson", b"as_json") for item in query.split(b"&")):
            as_json = ""
    return Params(
        preferred=next((p for p in prefs if p not in (None, "", "true")), None),
        preferred_text="true" in prefs,
        cca2=parse_cca2(_arg(args, "cca2")) or parse_ccode(_arg(args, "ccode")),
        path=None if path is None else clean_path(path),
        as_json=_flag(as_json),
        action=action,
        filename=None if filename is None else clean_path(filename),
        update=_arg(args, "update"),
        archive_aware=_flag(_arg(args, "archive_aware")),
    )
