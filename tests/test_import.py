"""admin.importers on the real lists (tests/fixtures, see SOURCES.md): parsing, mapping, idempotence."""

from __future__ import annotations

import csv
import dataclasses
from pathlib import Path

import pytest
import sqlalchemy as sa

from admin import importers, store
from admin.importers import ImportFormatError
from admin.store import MailSettings
from dnsd import countries, models
from dnsd.records.maintainers import Maintainer

FIX = Path(__file__).parent / "fixtures"
PHPNET = FIX / "php-net-mirrors-2013-09-19.tsv"
MIRMON = FIX / "mirmon-plain-mirror-list-debian-example.txt"
APACHE = FIX / "apache-mirrors-list-derived.txt"
MAIL = MailSettings(sender="mirrors@example.org", list="list@example.org")


def _import(engine, fmt, path, mail=MAIL):
    parsed = importers.parse(fmt, path.read_text(encoding="utf-8"), str(path))
    with engine.begin() as conn:
        return importers.apply(conn, parsed, actor="importer", mail=mail, fname=str(path), fmt=fmt)


def _table(engine) -> list:
    """The whole mirror table without the clock columns, to compare two states."""
    with engine.begin() as conn:
        rows = store.list_mirrors(conn)
    return [(dataclasses.replace(d.mirror, created_at=None, updated_at=None, status_since=None),
             d.maintainers) for d in rows]


def test_phpnet_tsv_maps_every_row():
    p = importers.parse_phpnet_tsv(PHPNET.read_text(), "php.tsv")
    rows = list(csv.DictReader(PHPNET.open(), delimiter="\t"))
    assert len(rows) == 90 and len(p.entries) == 88
    assert [(s.what, s.line) for s in p.skipped] == [("www.php.net", 90), ("docs.php.net", 91)]
    assert all("not a download mirror" in s.reason for s in p.skipped)
    by_host = {e.hostname: e for e in p.entries}
    de2 = by_host["de2.php.net"]
    assert (de2.name, de2.country, de2.status, de2.source) == ("de2", "DE", "active",
                                                               "phpnet:de2.php.net")
    assert de2.fields["http_url"] == "http://de2.php.net/"
    uk1 = by_host["uk1.php.net"]
    assert (uk1.name, uk1.country) == ("uk1", "GB")                 # GBR -> GB, name kept
    assert by_host["gr2.php.net"].country == "GR"
    broken = sorted((e.name, e.status, e.status_reason) for e in p.entries if e.status != "active")
    assert broken == [(n, "disabled-by-admin", "php.net list: does not work (MIRROR_DOESNOTWORK)")
                      for n in ("cn1", "ru2", "us3")]


def test_phpnet_tsv_twice_gives_the_same_table(engine):
    first = _import(engine, "phpnet-tsv", PHPNET)
    assert (len(first.added), len(first.updated), first.unchanged) == (88, 0, 0)
    once = _table(engine)
    with engine.begin() as conn:
        v1 = models.current_version(conn)
        mails = conn.execute(sa.select(models.outbox.c.subject)).scalars().all()
    assert mails == ["[mirrors] import by importer: 88 added, 0 updated, 0 unchanged, 2 skipped"]
    second = _import(engine, "phpnet-tsv", PHPNET)
    assert (second.added, second.updated, second.unchanged) == ([], [], 88)
    assert _table(engine) == once
    with engine.begin() as conn:
        assert models.current_version(conn) == v1                   # nothing changed, no bump
        assert conn.execute(sa.select(sa.func.count()).select_from(models.outbox)).scalar() == 1


def test_reimport_updates_the_files_fields_and_keeps_what_admins_own(engine, tmp_path):
    _import(engine, "phpnet-tsv", PHPNET)
    with engine.begin() as conn:
        store.disable(conn, "de2", "alice", "moving", None)
        store.edit_mirror(conn, "de2", "alice", weight=3, ipv4="93.184.216.34")
    changed = tmp_path / "changed.tsv"
    changed.write_text(PHPNET.read_text()
                       .replace("http://de2.php.net/\tde2.php.net", "https://de2.php.net/\tde2.php.net")
                       .replace("Locanto Kleinanzeigen", "Locanto"))
    rep = _import(engine, "phpnet-tsv", changed)
    assert rep.updated == [("de2", ["https_url", "provider_name"])] and rep.unchanged == 87
    with engine.begin() as conn:
        de2 = store.get_mirror(conn, "de2")
    assert de2.https_url == "https://de2.php.net/"
    assert (de2.status, de2.weight, de2.ipv4) == ("disabled-by-admin", 3.0, "93.184.216.34")


def test_mirmon_plain_list(engine):
    p = importers.parse_mirmon(MIRMON.read_text(), "list")
    assert len(p.entries) == 36 and p.skipped == []
    uk = next(e for e in p.entries if e.hostname == "ftp.uk.debian.org")
    assert uk.country == "GB" and uk.source == "mirmon:ftp.uk.debian.org"
    rep = _import(engine, "mirmon", MIRMON)
    assert len(rep.added) == 36
    with engine.begin() as conn:
        assert store.get_mirror(conn, "ftp.uk.debian.org").name == "gb1"
    assert _import(engine, "mirmon", MIRMON).unchanged == 36


def test_apache_list_merges_lines_per_host_and_explains_skips(engine):
    p = importers.parse_apache(APACHE.read_text(), "mirrors.list")
    by_host = {e.hostname: e for e in p.entries}
    de = by_host["apache.mirror.example.de"]
    assert de.fields == {"backup": False, "http_url": "http://apache.mirror.example.de/dist/",
                         "ftp_url": "ftp://apache.mirror.example.de/pub/apache/",
                         "rsync_url": "rsync://apache.mirror.example.de/apache/"}
    assert de.maintainers == [Maintainer("", "mirror@example.de")]
    assert by_host["www.mirror.example.uk"].country == "GB"
    assert by_host["www.mirror.example.uk"].maintainers == [Maintainer("Jane Admin",
                                                                       "jane@example.uk")]
    assert by_host["apache.mirrors.example.com"].maintainers == []     # a timestamp, not a contact
    assert by_host["ftp.planetmirror.com"].country == "AU"
    nl = by_host["apache.backup.example.nl"]
    assert (nl.country, nl.fields["backup"]) == ("NL", True)
    reasons = {s.what: s.reason for s in p.skipped}
    assert set(reasons) == {"http://apache-backup.example.org/", "gopher://apache.mirror.example.de/",
                            "http://apache.example.zz/"}
    assert "tells no country" in reasons["http://apache-backup.example.org/"]
    assert "type 'gopher'" in reasons["gopher://apache.mirror.example.de/"]
    assert "'zz' is not an ISO 3166-1 alpha-2" in reasons["http://apache.example.zz/"]
    rep = _import(engine, "apache", APACHE)
    assert len(rep.added) == 5
    with engine.begin() as conn:
        m = store.get_mirror(conn, "apache.backup.example.nl")
        assert (m.name, m.backup) == ("nl1", True)
        assert list(store.get_mirror(conn, "de1").maintainers) == de.maintainers
        # ftp- or rsync-only mirrors come in pending: the probes cannot check them
        au = store.get_mirror(conn, "ftp.planetmirror.com")
        assert au.status == "pending" and "no http or https URL" in au.status_reason
    assert _import(engine, "apache", APACHE).unchanged == 5


@pytest.mark.parametrize("fmt, text, message", [
    ("phpnet-tsv", "url\thostname\n", "f:1: not a php.net mirror TSV"),
    ("phpnet-tsv", "\t".join(importers.PHPNET_COLUMNS) + "\nhttp://x/\tx\n",
     "f:2: expected 10 tab-separated columns, found 2"),
    ("phpnet-tsv", "\t".join(importers.PHPNET_COLUMNS) + "\n" + "\t".join(
        ["http://de9.php.net/", "de9.php.net", "DEU", "P", "false", "", "MIRROR_STANDARD", "true",
         "de", "MIRROR_MAYBE"]) + "\n", "f:2: unknown status 'MIRROR_MAYBE'"),
    ("mirmon", "# comment\nde http://a.example/ a@b.example extra\n",
     "f:2: expected 'cc url [email]', found 4 fields"),
    ("mirmon", "de not-a-url\n", "f:1: 'not-a-url' is not a URL with a host"),
    ("apache", "http de\n", "f:1: expected 'type cc url contact', found 2 fields"),
    ("csv", "", "'csv' is not an import format"),
])
def test_malformed_files_are_one_clear_error(fmt, text, message):
    with pytest.raises(store.StoreError) as e:
        importers.parse(fmt, text, "f")
    assert message in str(e.value) and "\n" not in str(e.value)
    if fmt != "csv":
        assert isinstance(e.value, ImportFormatError)


def test_countries_cover_every_phpnet_and_mirmon_country():
    """The country table must know every code the real lists use (GB and GR were once missing)."""
    for r in csv.DictReader(PHPNET.open(), delimiter="\t"):
        if r["country_alpha3"] != "XXX":
            assert countries.from_alpha3(r["country_alpha3"]), r["country_alpha3"]
    mirmon_codes = {line.split()[0].upper() for line in MIRMON.read_text().splitlines() if line}
    assert {c for c in mirmon_codes if not countries.is_country(c)} == {"UK"}  # mapped to GB


def test_mirmon_third_field_is_a_maintainer_and_the_report_says_what_each_line_became(engine):
    text = ("# a mirmon list with contacts\n"
            "de http://ftp.de.example.org/debian/ ftp-admin@example.org\n"
            "de ftp://ftp.de.example.org/debian/ mailto:ftp-admin@example.org\n"
            "at http://mirror.example.at/debian/ not-an-address\n"
            "uk http://mirror.example.uk/debian/\n"
            "fr rsync://rsync.example.fr/debian/\n"
            "fr http://10.0.0.7/debian/\n")
    parsed = importers.parse_mirmon(text, "list")
    with engine.begin() as conn:
        store.add_mirror(conn, actor="t", mail=None, country="GB", hostname="mirror.example.uk",
                         http_url="http://mirror.example.uk/")            # added by hand
        rep = importers.apply(conn, parsed, actor="t", mail=None, fname="list", fmt="mirmon")
    lines = [str(o) for o in rep.by_line()]
    assert lines == [
        "line 2: added de1 (ftp.de.example.org, active) (with line 3)",
        "line 4: skipped http://mirror.example.at/debian/: 'not-an-address' does not look like "
        "a mail address (name@example.org)",
        "line 5: skipped mirror.example.uk: mirror.example.uk is already in the table as gb1 "
        "(added by hand)",
        "line 6: added fr1 (rsync.example.fr, pending: it has no http or https "
        "URL, and the probes check only those; add one, or leave it pending)",
        "line 7: skipped 10.0.0.7: 10.0.0.7 is a private, loopback or reserved address, which "
        "the Internet cannot reach ([probes] allow_private allows it)",
    ]
    with engine.begin() as conn:
        de1 = store.get_mirror(conn, "de1")
        assert de1.maintainers == (Maintainer("", "ftp-admin@example.org"),)
        assert de1.ftp_url == "ftp://ftp.de.example.org/debian/"
        assert de1.ipv4 is None and de1.ipv6 is None             # the probes resolve the name
    with engine.begin() as conn:                                  # the same file again
        rep = importers.apply(conn, parsed, actor="t", mail=None, fname="list", fmt="mirmon")
    assert [str(o) for o in rep.lines] == ["line 2: unchanged de1 (with line 3)",
                                           "line 6: unchanged fr1"]


def test_apache_contacts_follow_the_same_rules():
    text = ("http de http://a.example.de/ Jane\x00Doe <jane@example.de>\n"
            "http de http://b.example.de/ not an address\n"
            "http de http://c.example.de/ 1441187393\n"
            "http de http://d.example.de/ Doe, Jane <jane@example.de>\n")
    p = importers.parse_apache(text, "l")
    assert {s.what: s.reason for s in p.skipped} == {
        "http://a.example.de/": "contact: a maintainer must not hold control characters or "
                                "line breaks",
        "http://b.example.de/": "contact: 'not an address' does not look like a mail address "
                                "(name@example.org)"}
    by_host = {e.hostname: e.maintainers for e in p.entries}
    assert by_host == {"c.example.de": [], "d.example.de": [Maintainer("Doe, Jane",
                                                                       "jane@example.de")]}
