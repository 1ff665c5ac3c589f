"""Field validation and limits: the one place that says what a mirror, a maintainer, an
application or a reason may hold.

The CLI, the admin web, the JSON API, the public application form and the importers all call these
functions, so they refuse and accept the same inputs (tests/test_validation_channels.py runs one
table of cases through every channel). Each function returns the value cleaned for the table
(canonical address, lower-case host, upper-case country, base URL ending in '/') or raises
`Invalid(field, message)` with one sentence a person can act on.

Rules worth knowing:
- CR, LF, NUL and every other control character are refused in every one-line field; they could
  otherwise end up in a mail header or a log line. Multi-line text (notes, comments) keeps \\n/\\t.
- URLs refuse white space, control characters and `"<>\\^`{|}` (they end up in HTML attributes,
  mails and redirects), user:password parts, queries and fragments.
- Private, loopback, link-local and reserved addresses (also as URL hosts) are refused unless
  `[probes] allow_private`: the DNS would hand them to the public, and the probes would scan our own
  network on an applicant's say-so.
- A mirror needs a URL or an address; it can only be *active* with an http or https URL, since
  that is what the probes check (ftp- and rsync-only mirrors stay pending).
- A mirror's name must be free in the zone file (`zone_name_free`): a name the zone file holds
  or delegates would be answered from the file, not from the table.
"""

from __future__ import annotations

import datetime as _dt
import ipaddress
import math
import re
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path
from urllib.parse import urlsplit

from dnsd import countries
from dnsd.errors import Invalid
from dnsd.records.maintainers import Maintainer
from dnsd.records.mirrors import NAME_RE, SPEC_FIELDS, URL_FIELDS
from dnsd.zonefile import Zone, ZoneError, load_zone

# --- limits ----------------------------------------------------------------------------------------

MAX_LEN = {
    "hostname": 253, "url": 512, "provider_name": 255, "provider_url": 512, "provider_logo": 512,
    "maintainer_name": 255, "email": 254, "reason": 500, "note": 10_000, "comments": 4_000,
    "applicant_name": 255, "source": 255, "subject": 200, "mail_body": 50_000,
    "report_text": 1_000,
}
SPEC_MAX = {"bandwidth_mbit": 1_000_000, "cores": 100_000, "memory_gb": 1_000_000,
            "disk_gb": 100_000_000}
WEIGHT_MAX = 1000.0
MAX_MAINTAINERS = 10

# C0 and C1 controls, DEL, and the Unicode line/paragraph separators, as regex character-class
# text (the API's OpenAPI document states the same classes); lone surrogates (JSON can carry them,
# UTF-8 cannot) are refused too. Multi-line text may keep \t and \n.
BAD_LINE_CHARS = r"\u0000-\u001f\u007f-\u009f\u2028\u2029"
BAD_MULTI_CHARS = r"\u0000-\u0008\u000b-\u001f\u007f-\u009f\u2028\u2029"
_BAD_LINE = re.compile(f"[{BAD_LINE_CHARS}\ud800-\udfff]")
_BAD_MULTI = re.compile(f"[{BAD_MULTI_CHARS}\ud800-\udfff]")
# characters RFC 3986 never allows in a URL, plus white space
_BAD_URL = re.compile(r'[\s"<>\\^`{|}]')
_LABEL = re.compile(r"^(?!-)[a-z0-9-]{1,63}(?<!-)$")
_EMAIL = re.compile(r"^[A-Za-z0-9.!#$%&'*+/=?^_`{|}~-]{1,64}@[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}"
                    r"[A-Za-z0-9])?(?:\.[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?)+$")


@dataclass(frozen=True)
class Rules:
    """What the configuration changes about validation. Make one per operation: the zone file
    is read (once) the first time a mirror name is checked against it (`zone_name_free`), which
    the store does on the table's thread pool, never on the reactor thread."""

    allow_private: bool = False
    zone: str = ""              # [dns] zone: a mirror named de2 answers de2.<zone>
    zone_file: str = ""         # [dns] zone_file, resolved; "" = no static names to keep free

    @classmethod
    def from_config(cls, cfg) -> Rules:
        d = cfg.dns
        return cls(allow_private=bool(cfg.probes.allow_private), zone=d.zone,
                   zone_file=str(cfg.resolve_path(d.zone_file)) if d.zone_file else "")

    @cached_property
    def _zone(self) -> Zone | None:
        """The zone file's zone; None when there is none or this node has no copy of it (a node
        that does not serve DNS; the DNS nodes still log a clash at run time)."""
        if not self.zone_file:
            return None
        try:
            return load_zone(self.zone_file, self.zone)
        except ZoneError as e:
            if not Path(self.zone_file).exists():
                return None
            raise Invalid("name", f"mirror names cannot be checked against the zone file, "
                                  f"which does not load: {e}") from None

    def zone_occupant(self, label: str) -> str | None:
        """What the zone file holds at <label>.<zone> (dnsd.zonefile.Zone.occupant), or None."""
        z = self._zone
        return None if z is None else z.occupant(f"{label}.{z.origin}")


STRICT = Rules()


# --- text ------------------------------------------------------------------------------------------

def text(value, field: str, *, limit: int | None = None, required: bool = False,
         lines: bool = False, what: str = "") -> str:
    """A string with no control characters (one line unless `lines`), stripped, within `limit`."""
    if value is None:
        value = ""
    if not isinstance(value, str):
        raise Invalid(field, f"{what or field} must be text")
    v = value.replace("\r\n", "\n").strip() if lines else value.strip()
    if (_BAD_MULTI if lines else _BAD_LINE).search(v):
        raise Invalid(field, f"{what or field} must not hold control characters"
                             + ("" if lines else " or line breaks"))
    limit = limit if limit is not None else MAX_LEN.get(field)
    if limit is not None and len(value) > limit:         # as typed: white space counts
        raise Invalid(field, f"{what or field} is longer than {limit:,} characters")
    if required and not v:
        raise Invalid(field, f"{what or field} is empty")
    return v


def reason(value, field: str = "reason", required: bool = False) -> str:
    """A status change's reason: one line (it goes into a mail's Subject and the lists)."""
    return text(value, field, limit=MAX_LEN["reason"], required=required, what="the reason")


def note(value, field: str = "text") -> str:
    return text(value, field, limit=MAX_LEN["note"], required=True, lines=True, what="the note")


# A downloader's report (admin.mirror_reports): one reason from this short list, in the words the
# form shows, and an optional text.
REPORT_REASONS = {
    "unreachable": "The mirror does not answer (or not over HTTPS)",
    "outdated": "Its files are out of date (a release is missing)",
    "corrupt": "Files are wrong or corrupt (checksums or signatures do not match)",
    "slow": "Downloads are very slow",
    "other": "Something else (please say what below)",
}


def report_reason(value, field: str = "reason") -> str:
    v = text(value, field, limit=32, what="the reason")
    if v not in REPORT_REASONS:
        raise Invalid(field, "please choose one of the reasons" if not v else
                      f"'{v[:32]}' is not one of the reasons ({', '.join(REPORT_REASONS)})")
    return v


def report_text(value, reason: str = "", field: str = "text") -> str:
    """Optional, except with the reason "other", which says nothing by itself."""
    return text(value, field, limit=MAX_LEN["report_text"], lines=True, what="the text",
                required=reason == "other")


# --- mirror fields ---------------------------------------------------------------------------------

def name(value, field: str = "name") -> str | None:
    """A ccN label (two letters and a number, like de2); '' or None means no name."""
    if value is None or str(value).strip() == "":
        return None
    n = text(value, field, limit=32).lower()
    if not NAME_RE.match(n):
        raise Invalid(field, f"'{value}' is not a mirror name: two letters and a number, like de2")
    return n


def zone_name_free(n: str, rules: Rules, field: str = "name") -> str:
    """A mirror name that the zone file does not already hold (as a name, a delegation, or a
    name below one): the zone file's record would be answered instead of the mirror, so the
    name is refused, naming that record. `n` is a checked name (see `name`)."""
    occupant = rules.zone_occupant(n)
    if occupant is not None:
        fqdn = f"{n}.{rules.zone.rstrip('.').lower()}"
        raise Invalid(field, f"the name {n} is taken by the zone file: {fqdn} {occupant} (its "
                             f"record would be answered, not the mirror); choose another name, "
                             f"or remove the record")
    return n


def country(value, field: str = "country") -> str:
    """An ISO 3166-1 alpha-2 code; a near miss (UK, an alpha-3 code, a name) is refused with a
    hint rather than guessed, because a wrong country sends a whole country's users astray."""
    given = text(value, field, limit=64)
    c = given.upper()
    if len(c) == 2 and countries.is_country(c):
        return c
    if not c:
        raise Invalid(field, "a country is needed (an ISO 3166-1 alpha-2 code such as DE)")
    guess = countries.hint(c)
    shown = given if len(given) <= 20 else given[:20] + "..."
    msg = f"'{shown}' is not an ISO 3166-1 alpha-2 country code"
    if guess is not None:
        msg += f": did you mean {guess.alpha2} ({guess.name})?"
    else:
        msg += " (like DE, US, GB)"
    raise Invalid(field, msg)


def is_forbidden_address(ip: str) -> bool:
    """True for addresses nobody on the Internet can reach: private, loopback, link-local,
    multicast, unspecified, reserved (also IPv4-mapped). The probes refuse to connect to them and
    the table refuses to store them unless `[probes] allow_private` says so."""
    try:
        a = ipaddress.ip_address(ip.split("%", 1)[0])
    except ValueError:
        return True
    if isinstance(a, ipaddress.IPv6Address) and a.ipv4_mapped:
        a = a.ipv4_mapped
    return (a.is_private or a.is_loopback or a.is_link_local or a.is_multicast
            or a.is_unspecified or a.is_reserved or not a.is_global)


def _public(ip: str, field: str, rules: Rules) -> str:
    if not rules.allow_private and is_forbidden_address(ip):
        raise Invalid(field, f"{ip} is a private, loopback or reserved address, which the "
                             "Internet cannot reach ([probes] allow_private allows it)")
    return ip


def address(value, family: int, field: str | None = None, rules: Rules = STRICT) -> str | None:
    """An IPv4 or IPv6 address in canonical form (IPv6 compressed); '' or None means none."""
    field = field or f"ipv{family}"
    if value is None or str(value).strip() == "":
        return None
    v = text(str(value), field, limit=64)
    cls = ipaddress.IPv4Address if family == 4 else ipaddress.IPv6Address
    try:
        a = str(cls(v))
    except ValueError:
        raise Invalid(field, f"'{v[:64]}' is not an IPv{family} address") from None
    return _public(a, field, rules)


def ip_literal(host: str) -> str | None:
    """The canonical address when `host` is an IP literal (as in a URL), else None."""
    try:
        return str(ipaddress.ip_address(host.strip("[]")))
    except ValueError:
        return None


def hostname(value, field: str = "hostname", rules: Rules = STRICT) -> str:
    """A DNS name like mirror.example.net (lower case, no trailing dot), or an IP literal."""
    h = text(value, field, limit=MAX_LEN["hostname"] + 1).lower().rstrip(".")
    if not h:
        raise Invalid(field, "a host name is needed (like mirror.example.net)")
    lit = ip_literal(h)
    if lit is not None:
        return _public(lit, field, rules)
    try:
        ascii_h = h if h.isascii() else h.encode("idna").decode("ascii")
    except UnicodeError:
        raise Invalid(field, f"'{h[:80]}' is not a host name (like mirror.example.net)") from None
    labels = ascii_h.split(".")
    if (len(ascii_h) > MAX_LEN["hostname"] or len(labels) < 2
            or not all(_LABEL.match(x) for x in labels) or labels[-1].isdigit()):
        raise Invalid(field, f"'{h[:80]}' is not a host name (like mirror.example.net)")
    return h


def url(value, field: str, rules: Rules = STRICT) -> str | None:
    """A base URL of the field's scheme (http_url takes http://...), with a host, ending in '/'
    (file names are appended to it); '' or None means none."""
    if value is None or (isinstance(value, str) and value.strip() == ""):
        return None
    scheme = URL_FIELDS[field]
    v = text(value, field, limit=MAX_LEN["url"], what="the URL")
    if _BAD_URL.search(v):
        raise Invalid(field, "a URL must not hold spaces or any of \" < > \\ ^ ` { | }")
    try:
        parts = urlsplit(v)
        host = parts.hostname
        _ = parts.port                                   # raises on a bad port
    except ValueError:
        raise Invalid(field, f"'{v[:80]}' is not a URL") from None
    if parts.scheme.lower() != scheme or not host:
        raise Invalid(field, f"'{v[:80]}' is not a {scheme}:// URL with a host")
    if parts.username is not None or parts.password is not None:
        raise Invalid(field, "a mirror URL must not carry a user name or password")
    if parts.query or parts.fragment or v.endswith(("?", "#")):
        raise Invalid(field, f"'{v[:80]}': a base URL takes no ?query or #fragment")
    lit = ip_literal(host)
    if lit is not None:
        _public(lit, field, rules)
    else:
        hostname(host, field, rules)
    return v if v.endswith("/") else v + "/"


def url_field(value: str) -> str:
    """Which URL column a URL belongs in, from its scheme (`--url` without a protocol)."""
    v = (value or "").strip()
    scheme = v.split(":", 1)[0].lower() if ":" in v else ""
    for f, s in URL_FIELDS.items():
        if s == scheme:
            return f
    raise Invalid("url", f"'{v[:80]}': only http, https, ftp and rsync URLs are mirror URLs")


def web_url(value, field: str, rules: Rules = STRICT) -> str:
    """An http(s) link shown on pages (a provider's site, a logo); '' when empty."""
    v = text(value, field, limit=MAX_LEN.get(field, MAX_LEN["url"]))
    if not v:
        return ""
    if _BAD_URL.search(v):
        raise Invalid(field, "a URL must not hold spaces or any of \" < > \\ ^ ` { | }")
    try:
        parts = urlsplit(v)
        ok = parts.scheme in ("http", "https") and bool(parts.hostname)
    except ValueError:
        ok = False
    if not ok:
        raise Invalid(field, "an http:// or https:// address, please")
    if field == "provider_logo" and parts.scheme != "https":
        raise Invalid(field, "a logo must come from an https:// address (the pages allow no "
                             "other images)")
    return v


def is_web_url(value) -> bool:
    """For templates and display code: would web_url accept this (only such URLs become links)?"""
    try:
        return bool(web_url(value, "url"))
    except Invalid:
        return False


def weight(value, field: str = "weight") -> float:
    if isinstance(value, bool):
        raise Invalid(field, "the weight is a number from 0 to 1000")
    try:
        w = float(value if not isinstance(value, str) else (value.strip() or "1"))
    except (TypeError, ValueError):
        raise Invalid(field, f"the weight '{str(value)[:20]}' is not a number") from None
    if not (math.isfinite(w) and 0 <= w <= WEIGHT_MAX):
        raise Invalid(field, "the weight is a number from 0 to 1000")
    return w


SPEC_WORDS = {"bandwidth_mbit": "the bandwidth (Mbit/s)", "cores": "the number of cores",
              "memory_gb": "the memory (GB)", "disk_gb": "the disk (GB)"}


def count(value, field: str) -> int | None:
    """A declared spec (bandwidth, cores, memory, disk): a whole number, or None when empty."""
    what = SPEC_WORDS.get(field, field)
    if value is None or (isinstance(value, str) and value.strip() == ""):
        return None
    if isinstance(value, bool):
        raise Invalid(field, f"{what} must be a whole number")
    if isinstance(value, str):
        v = value.strip()
        if not (v.isascii() and v.isdigit()):
            raise Invalid(field, f"{what} must be a whole number (or empty)")
        value = int(v)
    if not isinstance(value, int):
        raise Invalid(field, f"{what} must be a whole number")
    if not 0 <= value <= SPEC_MAX[field]:
        raise Invalid(field, f"{what} must be between 0 and {SPEC_MAX[field]:,}")
    return value


def flag(value, field: str) -> bool:
    if isinstance(value, bool):
        return value
    raise Invalid(field, f"{field} must be true or false")


# --- people ----------------------------------------------------------------------------------------

def email(value, field: str = "email") -> str:
    """A bare mail address (no display name, quotes, commas or angle brackets)."""
    v = text(value, field, limit=MAX_LEN["email"], what="the mail address")
    if not v:
        raise Invalid(field, "a mail address is needed (like name@example.org)")
    if not _EMAIL.match(v):
        raise Invalid(field, f"'{v[:80]}' does not look like a mail address (name@example.org)")
    return v


def maintainer(name_: str, address_: str, field: str = "maintainers") -> Maintainer:
    """A (name, address) pair; the name may hold anything printable on one line, commas too:
    it is only ever a display name, never parsed for addresses."""
    return Maintainer(text(name_, field, limit=MAX_LEN["maintainer_name"], what="a name"),
                      email(address_, field))


def parse_maintainer(value: str, field: str = "maintainers") -> Maintainer:
    """'Jane Doe <jane@example.org>' or 'jane@example.org' (one person per call: a CLI option, a
    form line). The address is what lies in the last <...> at the end; everything before it is
    the name, commas and all."""
    v = text(value, field, limit=MAX_LEN["maintainer_name"] + MAX_LEN["email"] + 3,
             what="a maintainer")
    if v.endswith(">") and "<" in v:
        head, _, addr = v[:-1].rpartition("<")
        display = head.strip()
        if len(display) >= 2 and display[0] == display[-1] == '"':
            display = display[1:-1].replace('\\"', '"')
        return maintainer(display, addr.strip(), field)
    if "<" in v or ">" in v:
        raise Invalid(field, f"'{v[:80]}' is not a maintainer: use \"Name <address@example.org>\"")
    return maintainer("", v, field)


def maintainers(people, field: str = "maintainers") -> tuple[Maintainer, ...]:
    """Maintainer records, "Name <addr>" strings or {'name','email'} mappings, checked, in order,
    without repeats of an address."""
    out: list[Maintainer] = []
    for p in people or ():
        if isinstance(p, Maintainer):
            m = maintainer(p.name, p.email, field)
        elif isinstance(p, dict):
            m = maintainer(p.get("name", ""), p.get("email", ""), field)
        elif isinstance(p, str):
            m = parse_maintainer(p, field)
        else:
            raise Invalid(field, "a maintainer is a name and a mail address")
        if all(x.email.lower() != m.email.lower() for x in out):
            out.append(m)
    if len(out) > MAX_MAINTAINERS:
        raise Invalid(field, f"at most {MAX_MAINTAINERS} maintainers")
    return tuple(out)


# --- a whole mirror --------------------------------------------------------------------------------

ADDRESS_FIELDS = ("ipv4", "ipv6")
TEXT_FIELDS = ("provider_name", "source")
LINK_FIELDS = ("provider_url", "provider_logo")
BOOL_FIELDS = ("backup", "has_ipv6", "has_https")
MIRROR_FIELDS = ("name", "hostname", "country", *ADDRESS_FIELDS, *URL_FIELDS, *TEXT_FIELDS,
                 *LINK_FIELDS, "backup", "weight", *SPEC_FIELDS, "has_ipv6", "has_https")


def mirror_field(field: str, value, rules: Rules = STRICT):
    """One mirror column's value, checked and cleaned."""
    if field == "name":
        return name(value)
    if field == "hostname":
        return hostname(value, rules=rules)
    if field == "country":
        return country(value)
    if field in ADDRESS_FIELDS:
        return address(value, 4 if field == "ipv4" else 6, rules=rules)
    if field in URL_FIELDS:
        return url(value, field, rules)
    if field in LINK_FIELDS:
        return web_url(value, field, rules)
    if field in TEXT_FIELDS:
        return text(value, field)
    if field in BOOL_FIELDS:
        return flag(value, field)
    if field == "weight":
        return weight(value)
    if field in SPEC_FIELDS:
        return count(value, field)
    raise Invalid(field, f"'{field}' is not a mirror field that can be set")


def mirror_fields(values: dict, rules: Rules = STRICT) -> dict:
    """Every given field checked; the first bad one raises."""
    return {k: mirror_field(k, v, rules) for k, v in values.items()}


def mirror_problem(m) -> str:
    """'' when a mirror (a record or a mapping of its columns) is complete, else what it lacks:
    a mirror needs a URL or an address, or nothing could ever use it."""
    get = m.get if isinstance(m, dict) else (lambda k, d=None: getattr(m, k, d))
    if not any(get(f) for f in (*URL_FIELDS, *ADDRESS_FIELDS)):
        return "a mirror needs a URL or an address"
    return ""


def activation_problem(m) -> str:
    """'' when the mirror may be active, else why not: the probes check http and https, so an
    ftp- or rsync-only mirror (or one with addresses only) could never be judged and stays
    pending until it has an http or https URL."""
    get = m.get if isinstance(m, dict) else (lambda k, d=None: getattr(m, k, d))
    if problem := mirror_problem(m):
        return problem
    if not (get("http_url") or get("https_url")):
        return ("it has no http or https URL, and the probes check only those; add one, or "
                "leave it pending")
    return ""


# --- maintenance windows ---------------------------------------------------------------------------

MAINTENANCE_MAX = _dt.timedelta(days=7)        # the longest window: longer is an outage, not upkeep
MAINTENANCE_AHEAD = _dt.timedelta(days=366)    # how far ahead a window may be planned
WINDOW_FIELDS = ("starts_at", "ends_at", "reason")
_TIME_WORDS = {"starts_at": "the start", "ends_at": "the end"}


@dataclass(frozen=True)
class WindowInput:
    """A maintenance window as checked: naive-UTC times to the second, a one-line reason."""

    starts_at: _dt.datetime
    ends_at: _dt.datetime
    reason: str


def moment(value, field: str) -> _dt.datetime:
    """A time as naive UTC: a datetime (naive ones are UTC) or text such as '2026-12-01 14:00',
    '2026-12-01T14:00:30Z' or '2026-12-01 16:00+02:00'; a date alone is refused (which hour?)."""
    what = _TIME_WORDS.get(field, field)
    if isinstance(value, _dt.datetime):
        t = value
    else:
        v = text(value, field, limit=40, what=what)
        if not v:
            raise Invalid(field, f"{what} is empty")
        v = v.removesuffix("UTC").strip()
        try:
            t = _dt.datetime.fromisoformat(v)
        except ValueError:
            t = None
        if t is None or len(v) < 16:
            raise Invalid(field, f"{what} is not a time: write it as YYYY-MM-DD HH:MM (UTC)")
    if t.tzinfo is not None:
        t = t.astimezone(_dt.UTC).replace(tzinfo=None)
    return t.replace(microsecond=0)


def maintenance_window_errors(starts_at, ends_at, reason_, now: _dt.datetime
                              ) -> tuple[WindowInput | None, dict[str, str]]:
    """(the window, {}) or (None, {field: message}) with every field's problem, for forms that
    show each message by its field. The rules: a start not in the past (the current minute
    counts as now) and at most MAINTENANCE_AHEAD away, an end after the start and at most
    MAINTENANCE_MAX after it, a reason (one line, like a status change's)."""
    errors: dict[str, str] = {}
    got: dict = {}
    for field, value in (("starts_at", starts_at), ("ends_at", ends_at)):
        try:
            got[field] = moment(value, field)
        except Invalid as e:
            errors[field] = e.message
    try:
        got["reason"] = reason(reason_, required=True)
    except Invalid as e:
        errors["reason"] = e.message
    start, end = got.get("starts_at"), got.get("ends_at")
    if start is not None:
        if start < now.replace(second=0, microsecond=0):
            errors["starts_at"] = "the start is in the past"
        elif start > now + MAINTENANCE_AHEAD:
            errors["starts_at"] = (f"the start is more than {MAINTENANCE_AHEAD.days} days "
                                   f"ahead")
    if start is not None and end is not None:
        if end <= start:
            errors["ends_at"] = "the end must be after the start"
        elif end - start > MAINTENANCE_MAX:
            errors["ends_at"] = (f"a window is at most {MAINTENANCE_MAX.days} days long (for "
                                 f"longer, disable the mirror)")
    if errors:
        return None, errors
    return WindowInput(start, end, got["reason"]), {}


def maintenance_window(starts_at, ends_at, reason_, now: _dt.datetime) -> WindowInput:
    """The window checked (maintenance_window_errors' rules), or Invalid for its first field
    with a problem."""
    w, errors = maintenance_window_errors(starts_at, ends_at, reason_, now)
    if errors:
        field = next(f for f in WINDOW_FIELDS if f in errors)
        raise Invalid(field, errors[field])
    return w
