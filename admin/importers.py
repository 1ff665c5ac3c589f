"""Importing the mirror lists of the systems this one replaces.

Three formats (see tests/fixtures/SOURCES.md for real examples):

- `phpnet-tsv`: the php.net mirror list (include/mirrors.inc) as tab-separated columns
  url, hostname, country_alpha3, provider_name, has_stats, provider_url, mirror_type, has_sqlite,
  default_lang, status. Names come from `ccN.php.net` host names; alpha-3 countries become alpha-2;
  MIRROR_OK is active, MIRROR_NOTACTIVE / OUTDATED / DOESNOTWORK are disabled-by-admin with the
  reason; special and virtual mirrors (www.php.net, docs.php.net, country XXX) are skipped with a
  reason, because they are not download mirrors a DNS name should pick.
- `mirmon`: mirmon's plain list, `cc url [email]` per line (mirmon itself reads three fields); the
  address becomes a maintainer of the mirror.
- `apache`: Apache's mirrors.list as mirmon reads it (list_style apache), `type cc url contact`
  per line; `cc` may be `backup`; the generated list ASF's closer read had a Unix timestamp in the
  fourth column instead of a contact, which is accepted and ignored.

Several lines of one host (http and ftp URLs of one mirror) become one mirror. Each mirror is keyed
by `mirrors.source` ("phpnet:de2.php.net", "mirmon:ftp.de.debian.org", ...), so importing the same
file twice gives the same table. A re-import updates what the file describes (host, country, URLs,
provider, backup flag, maintainers) and leaves what admins own since (name, status, weight, notes).
A file that is not in its format fails the whole import (one transaction) with FILE:LINE in the
message; a line the table's rules refuse (dnsd.validation, as the CLI and the web refuse it, or a
host already in the table from elsewhere) is skipped with the reason, and the report says what
every line became. Imported mirrors have no addresses: the probes resolve their host names, and
they serve once a probe passed (dnsd.serving). An ftp- or rsync-only mirror comes in pending,
since the probes cannot check it.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from urllib.parse import urlsplit

import sqlalchemy as sa

from admin import store
from admin.store import MailSettings, StoreError
from dnsd import countries, recipients, validation
from dnsd.errors import Refused
from dnsd.records import maintainers as _maint
from dnsd.records import mirrors as _mirrors
from dnsd.statuses import ACTIVE, DISABLED_ADMIN, PENDING
from dnsd.validation import Rules

FORMATS = ("phpnet-tsv", "mirmon", "apache")


class ImportFormatError(StoreError):
    """The file is not in the format asked for (message starts with FILE:LINE)."""


@dataclass
class Entry:
    """One mirror as the file describes it."""

    source: str
    line: int
    hostname: str
    country: str
    name: str | None = None
    fields: dict = field(default_factory=dict)          # url columns, provider, backup
    status: str = ACTIVE
    status_reason: str = ""
    maintainers: list = field(default_factory=list)      # [Maintainer]
    lines: list = field(default_factory=list)            # every line number it came from


@dataclass
class Skipped:
    line: int
    what: str
    reason: str

    def __str__(self) -> str:
        return f"line {self.line} ({self.what}): {self.reason}"


@dataclass
class Parsed:
    entries: list[Entry]
    skipped: list[Skipped]


# mirmon and Apache wrote the United Kingdom as 'uk' (closer.lua turned GeoIP's 'gb' into 'uk'):
# in these two formats it is the format's own code, not a typo, so it is read as GB.
FORMAT_ALIASES = {"UK": "GB"}
_CCN_HOST = re.compile(r"^([a-z]{2}[0-9]+)\.")


def _alpha2(cc: str) -> tuple[str | None, str]:
    """(the alpha-2 code, '') or (None, dnsd.validation's reason)."""
    c = FORMAT_ALIASES.get(cc.strip().upper(), cc.strip())
    try:
        return validation.country(c), ""
    except Refused as e:
        return None, e.message


def _host_of(url: str, fname: str, lineno: int) -> str:
    try:
        host = urlsplit(url).hostname
    except ValueError:
        host = None
    if not host:
        raise ImportFormatError(f"{fname}:{lineno}: '{url}' is not a URL with a host")
    return host.lower()


# --- php.net -----------------------------------------------------------------------------------

PHPNET_COLUMNS = ["url", "hostname", "country_alpha3", "provider_name", "has_stats",
                  "provider_url", "mirror_type", "has_sqlite", "default_lang", "status"]
_PHPNET_STATUS = {
    "MIRROR_OK": (ACTIVE, ""),
    "MIRROR_NOTACTIVE": (DISABLED_ADMIN, "php.net list: not active (MIRROR_NOTACTIVE)"),
    "MIRROR_OUTDATED": (DISABLED_ADMIN, "php.net list: outdated (MIRROR_OUTDATED)"),
    "MIRROR_DOESNOTWORK": (DISABLED_ADMIN, "php.net list: does not work (MIRROR_DOESNOTWORK)"),
}
_PHPNET_TYPES = ("MIRROR_DOWNLOAD", "MIRROR_STANDARD", "MIRROR_SPECIAL", "MIRROR_VIRTUAL")


def parse_phpnet_tsv(text: str, fname: str = "<input>") -> Parsed:
    lines = text.splitlines()
    if not lines or lines[0].rstrip("\r").split("\t") != PHPNET_COLUMNS:
        raise ImportFormatError(
            f"{fname}:1: not a php.net mirror TSV: the first line must name the columns "
            + " ".join(PHPNET_COLUMNS))
    entries, skipped, seen = [], [], set()
    for lineno, raw in enumerate(lines[1:], start=2):
        if not raw.strip():
            continue
        cols = raw.rstrip("\r").split("\t")
        if len(cols) != len(PHPNET_COLUMNS):
            raise ImportFormatError(f"{fname}:{lineno}: expected {len(PHPNET_COLUMNS)} "
                                    f"tab-separated columns, found {len(cols)}")
        r = dict(zip(PHPNET_COLUMNS, (c.strip() for c in cols)))
        host = r["hostname"].lower()
        if r["mirror_type"] not in _PHPNET_TYPES:
            raise ImportFormatError(f"{fname}:{lineno}: unknown mirror_type '{r['mirror_type']}'")
        if r["status"] not in _PHPNET_STATUS:
            raise ImportFormatError(f"{fname}:{lineno}: unknown status '{r['status']}'")
        if r["mirror_type"] in ("MIRROR_SPECIAL", "MIRROR_VIRTUAL"):
            skipped.append(Skipped(lineno, host, f"{r['mirror_type']} is php.net's own site, "
                                                 "not a download mirror"))
            continue
        c = countries.from_alpha3(r["country_alpha3"])
        if c is None:
            skipped.append(Skipped(lineno, host, f"country '{r['country_alpha3']}' is not an "
                                                 "ISO 3166 alpha-3 code"))
            continue
        if host in seen:
            skipped.append(Skipped(lineno, host, "listed twice; the first line counts"))
            continue
        seen.add(host)
        m = _CCN_HOST.match(host)
        status, reason = _PHPNET_STATUS[r["status"]]
        url = r["url"]
        scheme = urlsplit(url).scheme.lower()
        if scheme not in ("http", "https"):
            raise ImportFormatError(f"{fname}:{lineno}: '{url}' is not an http(s) URL")
        entries.append(Entry(
            source=f"phpnet:{host}", line=lineno, hostname=host, country=c.alpha2,
            name=m.group(1) if m else None,
            fields={f"{scheme}_url": url, "provider_name": r["provider_name"],
                    "provider_url": r["provider_url"]},
            status=status, status_reason=reason, lines=[lineno],
        ))
    return Parsed(entries, skipped)


# --- mirmon and Apache -------------------------------------------------------------------------

def _merge(by_host: dict, order: list, skipped: list, *, prefix: str, lineno: int, host: str,
           country: str, url_field: str, url: str, backup: bool, contact) -> None:
    e = by_host.get(host)
    if e is None:
        e = by_host[host] = Entry(source=f"{prefix}:{host}", line=lineno, hostname=host,
                                  country=country, fields={"backup": backup})
        order.append(host)
    elif e.country != country:
        skipped.append(Skipped(lineno, url, f"{host} is already listed in {e.country} "
                                            f"(line {e.line})"))
        return
    if url_field in e.fields:
        skipped.append(Skipped(lineno, url, f"{host} already has a {url_field.split('_')[0]} "
                                            f"URL (line {e.line})"))
    else:
        e.fields[url_field] = url
        e.lines.append(lineno)
    if contact and contact not in e.maintainers:
        e.maintainers.append(contact)


def parse_mirmon(text: str, fname: str = "<input>") -> Parsed:
    by_host, order, skipped = {}, [], []
    for lineno, raw in enumerate(text.splitlines(), start=1):
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        parts = line.split()
        if len(parts) not in (2, 3):
            raise ImportFormatError(f"{fname}:{lineno}: expected 'cc url [email]', found "
                                    f"{len(parts)} fields")
        cc, url = parts[0], parts[1]
        host = _host_of(url, fname, lineno)
        country, why = _alpha2(cc)
        if country is None:
            skipped.append(Skipped(lineno, url, why))
            continue
        contact = None
        if len(parts) == 3:
            addr = parts[2][7:] if parts[2].lower().startswith("mailto:") else parts[2]
            try:
                contact = validation.maintainer("", addr)
            except Refused as e:
                skipped.append(Skipped(lineno, url, e.message))
                continue
        try:
            fld = validation.url_field(url)
        except Refused as e:
            skipped.append(Skipped(lineno, url, str(e)))
            continue
        _merge(by_host, order, skipped, prefix="mirmon", lineno=lineno, host=host,
               country=country, url_field=fld, url=url, backup=False, contact=contact)
    return Parsed([by_host[h] for h in order], skipped)


def _contact(text: str):
    """A contact column: mailto:a@b, a@b or "Name <a@b>" (dnsd.validation's rules: a control
    character or a bad address refuses the line); a Unix timestamp means none."""
    t = text.strip()
    if not t or t.isdigit():
        return None
    if t.lower().startswith("mailto:"):
        t = t[7:]
    return validation.parse_maintainer(t)


def parse_apache(text: str, fname: str = "<input>") -> Parsed:
    by_host, order, skipped = {}, [], []
    for lineno, raw in enumerate(text.splitlines(), start=1):
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        parts = line.split(None, 3)
        if len(parts) < 3:
            raise ImportFormatError(f"{fname}:{lineno}: expected 'type cc url contact', found "
                                    f"{len(parts)} fields")
        typ, cc, url = parts[0].lower(), parts[1], parts[2]
        host = _host_of(url, fname, lineno)
        try:
            contact = _contact(parts[3]) if len(parts) == 4 else None
        except Refused as e:
            skipped.append(Skipped(lineno, url, f"contact: {e.message}"))
            continue
        if typ not in ("http", "https", "ftp", "rsync"):
            skipped.append(Skipped(lineno, url, f"type '{parts[0]}' is not http, https, ftp or "
                                                "rsync"))
            continue
        if urlsplit(url).scheme.lower() != typ:
            skipped.append(Skipped(lineno, url, f"type {typ} does not match the URL's scheme"))
            continue
        backup = cc.lower() == "backup"
        if backup:
            # Backup mirrors were listed without a country; a ccTLD host name still tells one.
            country, _why = _alpha2(host.rsplit(".", 1)[-1])
            if country is None:
                skipped.append(Skipped(lineno, url, "backup mirror whose host name tells no "
                                                    "country; add it by hand with --backup"))
                continue
        else:
            country, why = _alpha2(cc)
            if country is None:
                skipped.append(Skipped(lineno, url, why))
                continue
        _merge(by_host, order, skipped, prefix="apache", lineno=lineno, host=host,
               country=country, url_field=f"{typ}_url", url=url, backup=backup, contact=contact)
    return Parsed([by_host[h] for h in order], skipped)


PARSERS = {"phpnet-tsv": parse_phpnet_tsv, "mirmon": parse_mirmon, "apache": parse_apache}


def parse(fmt: str, text: str, fname: str = "<input>") -> Parsed:
    if fmt not in PARSERS:
        raise StoreError(f"'{fmt}' is not an import format (one of {', '.join(FORMATS)})")
    return PARSERS[fmt](text, fname)


# --- applying ----------------------------------------------------------------------------------

@dataclass
class Outcome:
    """What one line of the file became."""

    line: int
    text: str

    def __str__(self) -> str:
        return f"line {self.line}: {self.text}"


@dataclass
class Report:
    added: list[str] = field(default_factory=list)
    updated: list[tuple[str, list[str]]] = field(default_factory=list)
    unchanged: int = 0
    skipped: list[Skipped] = field(default_factory=list)
    lines: list[Outcome] = field(default_factory=list)

    def summary(self) -> str:
        return (f"{len(self.added)} added, {len(self.updated)} updated, {self.unchanged} "
                f"unchanged, {len(self.skipped)} skipped")

    def by_line(self) -> list[Outcome]:
        """Every line that meant something, in file order, skips included."""
        out = self.lines + [Outcome(s.line, f"skipped {s.what}: {s.reason}") for s in self.skipped]
        return sorted(out, key=lambda o: o.line)


def _fields(e: Entry, rules: Rules) -> dict:
    """The file's fields checked by the table's rules (as `mirrorctl add` would check them)."""
    return {"hostname": validation.hostname(e.hostname, rules=rules), "country": e.country,
            **validation.mirror_fields(e.fields, rules)}


def apply(conn: sa.Connection, parsed: Parsed, *, actor: str, mail: MailSettings | None,
          fname: str = "", fmt: str = "", rules: Rules = validation.STRICT) -> Report:
    """Write parsed entries into the table in the caller's transaction (idempotent by source)."""
    rep = Report(skipped=list(parsed.skipped))
    for e in parsed.entries:
        rest = [str(n) for n in e.lines if n != e.line]
        also = f" (with line{'s' if len(rest) > 1 else ''} {', '.join(rest)})" if rest else ""
        try:
            with conn.begin_nested():                 # a refused entry leaves nothing behind
                outcome = _apply_one(conn, e, actor, rules, rep)
        except Refused as err:
            rep.skipped.append(Skipped(e.line, e.hostname, str(err)))
            continue
        rep.lines.append(Outcome(e.line, outcome + also))
    if mail is not None and mail.list and (rep.added or rep.updated):
        from dnsd.outbox import queue_mail

        body = [f"{actor} imported {fname or 'a list'} ({fmt}): {rep.summary()}.", ""]
        if rep.added:
            body.append("Added: " + ", ".join(rep.added))
        if rep.updated:
            body.append("Updated: " + ", ".join(n for n, _ in rep.updated))
        queue_mail(conn, kind="import", sender=mail.sender,
                   to=recipients.for_kind("import", list_address=mail.list),
                   subject=f"[mirrors] import by {actor}: {rep.summary()}",
                   body="\n".join(body) + "\n", author=actor, reply_to=mail.reply_to)
    return rep


def _apply_one(conn, e: Entry, actor: str, rules: Rules, rep: Report) -> str:
    file_fields = _fields(e, rules)
    people = validation.maintainers(e.maintainers)
    mine = _mirrors.by_source(conn, e.source)
    if mine is None:
        twin = _mirrors.host_owner(conn, file_fields["hostname"])
        if twin is not None:
            raise Refused(f"{twin.hostname} is already in the table as "
                          f"{twin.name or '#' + str(twin.id)}"
                          + (f" (from {twin.source})" if twin.source else " (added by hand)"))
        name = e.name
        if name and _mirrors.name_owner(conn, name) is not None:
            raise Refused(f"name {name} is already used by "
                          f"{_mirrors.name_owner(conn, name).hostname}")
        status, reason = e.status, e.status_reason
        pending = validation.activation_problem(file_fields)
        if status == ACTIVE and pending:
            status, reason = PENDING, pending
        m = store.add_mirror(
            conn, actor=actor, mail=None, name=name, status=status, status_reason=reason,
            maintainers_=people, action="import-add", source=e.source, rules=rules,
            **file_fields)
        rep.added.append(m.name)
        return f"added {m.name} ({m.hostname}, {m.status}" + (f": {reason}" if reason else "") \
            + ")"
    ref = f"#{mine.id}"
    changed = list(store.edit_mirror(conn, ref, actor, action="import-update", rules=rules,
                                     **file_fields).changed)
    if people and _maint.of_mirror(conn, mine.id) != people:
        store.set_maintainers(conn, ref, actor, people)
        changed.append("maintainers")
    label = mine.name or ref
    if changed:
        rep.updated.append((label, changed))
        return f"updated {label}: {', '.join(changed)}"
    rep.unchanged += 1
    return f"unchanged {label}"
