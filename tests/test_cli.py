"""mirrorctl end to end, in a subprocess, on a SQLite file: what admins type and what they see.

Every error must be one line on stderr, a non-zero exit and an unchanged table.
"""

from __future__ import annotations

import csv
import datetime as _dt
import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
import sqlalchemy as sa

from admin.passwords import verify_password
from dnsd import countries

FIX = Path(__file__).parent / "fixtures"
PHPNET = FIX / "php-net-mirrors-2013-09-19.tsv"


class Ctl:
    def __init__(self, tmp_path: Path):
        self.dir = tmp_path
        self.db = tmp_path / "var" / "m.sqlite"
        self.config = tmp_path / "mirrordns.toml"
        # the documentation addresses of these tests are not public ones: allow_private
        self.config.write_text('[database]\nurl = "sqlite:///var/m.sqlite"\n'
                               '[mail]\nfrom = "mirrors@example.org"\nlist = "list@example.org"\n'
                               '[probes]\nallow_private = true\n')

    def __call__(self, *args, stdin: str | None = None, config: bool = True, env=None):
        argv = [sys.executable, "-m", "admin.cli"]
        if config:
            argv += ["--config", str(self.config)]
        e = {k: v for k, v in os.environ.items() if k != "MIRRORDNS_CONFIG"}
        e.update({"USER": "tester", "SUDO_USER": "", "LOGNAME": "", **(env or {})})
        return subprocess.run(argv + ["--actor", "tester", *args], input=stdin, check=False,
                              capture_output=True, text=True, cwd=self.dir, env=e, timeout=60)

    def ok(self, *args, **kw) -> str:
        r = self(*args, **kw)
        assert r.returncode == 0, r.stderr
        assert r.stderr.strip() == "" or args[0] in ("list",), r.stderr
        return r.stdout

    def fails(self, *args, **kw) -> str:
        r = self(*args, **kw)
        assert r.returncode != 0, r.stdout
        assert "Traceback" not in r.stderr
        lines = r.stderr.strip().splitlines()
        assert len(lines) == 1, r.stderr
        assert r.stdout == ""
        return lines[0]

    def sql(self, query: str):
        e = sa.create_engine(f"sqlite:///{self.db}")
        try:
            with e.connect() as c:
                return c.exec_driver_sql(query).all()
        finally:
            e.dispose()


@pytest.fixture
def ctl(tmp_path):
    c = Ctl(tmp_path)
    assert "schema is current" in c.ok("db", "upgrade")
    return c


def test_the_five_minute_tour(ctl):
    out = ctl.ok("add", "--country", "DE", "--host", "mirror.example.de", "--ipv4", "192.0.2.10",
                 "--ipv6", "2001:db8:de::10", "--url", "http://mirror.example.de/pub/",
                 "--url", "https://mirror.example.de/pub/", "--maintainer", "Jane Doe <jane@example.de>",
                 "--bandwidth", "1000", "--note", "first one")
    assert out.strip() == "de1: added mirror.example.de in DE (active)"
    assert ctl.ok("add", "--country", "de", "--host", "m2.example.de", "--name", "de5",
                  "--url", "http://m2.example.de/", "--status", "pending").startswith(
        "de5: added m2.example.de in DE (pending)")
    table = ctl.ok("list").splitlines()
    assert table[0].split() == ["NAME", "CC", "STATUS", "HOST", "IPV4", "IPV6", "SERVING"]
    assert table[1].split() == ["de1", "DE", "active", "mirror.example.de", "192.0.2.10",
                                "2001:db8:de::10", "no:", "never", "probed"]
    show = ctl.ok("show", "de1")
    assert "de1.mirrors.example.org  (mirror.example.de)" in show
    assert "serving     no: never probed" in show
    assert "addresses   192.0.2.10  2001:db8:de::10  (pinned)" in show
    assert "maintainers Jane Doe <jane@example.de>" in show
    assert ("score 1.200 = capacity 1.200 (bandwidth 1.00 x hardware 1.00 x features 1.20) x health "
            "1.000 (uptime 1.00 x speed 1.00 x freshness 1.00) x weight 1") in show
    assert "health      not probed yet" in show and "first one" in show
    assert ctl.ok("edit", "de1", "--weight", "2", "--ipv4", "192.0.2.11").splitlines() == [
        "de1 (mirror.example.de): ipv4: 192.0.2.10 -> 192.0.2.11",
        "de1 (mirror.example.de): weight: 1.0 -> 2.0"]
    assert ctl.ok("edit", "de1", "--weight", "2").strip() == "de1 (mirror.example.de): nothing changed"
    assert ctl.ok("disable", "de1", "--reason", "hardware move").strip() == \
        "de1 (mirror.example.de): disabled-by-admin (hardware move)"
    assert ctl.ok("note", "de1", "racks moved").strip() == "de1: note added"
    assert ctl.ok("enable", "de1").strip() == "de1 (mirror.example.de): active"
    assert ctl.ok("retire", "de5", "--reason", "never came up").strip() == \
        "de5 (m2.example.de): retired (never came up)"
    assert [r[0] for r in json.loads(ctl.ok("list", "--status", "retired", "--json"))
            for r in [(r["name"],)]] == ["de5"]
    shown = json.loads(ctl.ok("show", "de1", "--json"))
    assert [n["text"] for n in shown["notes"]][:3] == [
        "Enabled (was disabled-by-admin)", "racks moved", "Disabled (was active): hardware move"]
    assert shown["score"] > 0 and shown["score_explained"].startswith("score ")
    audit = ctl.sql("select actor, action from audit order by id")
    assert audit == [("tester", a) for a in ("add", "note", "add", "edit", "disable", "note",
                                             "enable", "retire")]
    kinds = ctl.sql("select kind, recipients from outbox order by id")
    assert kinds == [("mirror-added", "list@example.org,jane@example.de"),
                     ("mirror-added", "list@example.org"),
                     ("mirror-disabled", "list@example.org,jane@example.de"),
                     ("mirror-enabled", "list@example.org,jane@example.de"),
                     ("mirror-retired", "list@example.org")]
    assert "tester  disable" in ctl.ok("audit", "de1")


def test_import_twice_and_list_json_round_trips(ctl):
    out = ctl.ok("import", "phpnet-tsv", str(PHPNET))
    assert out.splitlines()[-1].endswith("88 added, 0 updated, 0 unchanged, 2 skipped")
    assert "line 90: skipped www.php.net: MIRROR_SPECIAL" in out
    assert "line 2: added ar2 (ar2.php.net, active)" in out
    before = ctl.ok("list", "--json")
    again = ctl.ok("import", "phpnet-tsv", str(PHPNET))
    assert again.splitlines()[-1].endswith("0 added, 0 updated, 88 unchanged, 2 skipped")
    assert ctl.ok("list", "--json") == before
    listed = {m["source"]: m for m in json.loads(before)}
    rows = [r for r in csv.DictReader(PHPNET.open(), delimiter="\t")
            if r["mirror_type"] == "MIRROR_STANDARD"]
    assert len(rows) == len(listed) == 88
    for r in rows:
        m = listed[f"phpnet:{r['hostname']}"]
        assert m["name"] == r["hostname"].split(".")[0]
        assert m["hostname"] == r["hostname"]
        assert m["country"] == countries.from_alpha3(r["country_alpha3"]).alpha2
        assert m["http_url"] == r["url"]
        assert (m["provider_name"], m["provider_url"]) == (r["provider_name"], r["provider_url"])
        assert m["status"] == ("active" if r["status"] == "MIRROR_OK" else "disabled-by-admin")
    dry = ctl.ok("import", "mirmon", str(FIX / "mirmon-plain-mirror-list-debian-example.txt"),
                 "--dry-run")
    assert dry.strip().splitlines()[-1].startswith("dry run, nothing written") and "36 added" in dry
    assert ctl.ok("list", "--json") == before
    assert [m["name"] for m in json.loads(ctl.ok("list", "--country", "gb", "--json"))] == ["uk1", "uk3"]


def test_user_add_from_stdin_and_file(ctl, tmp_path):
    assert ctl.ok("user", "add", "alice", "--role", "helper", stdin="s3cret passphrase\n").strip() == \
        "user alice added (helper)"
    (tmp_path / "pw").write_text("other secret words\nignored\n")
    ctl.ok("user", "add", "bob", "--password-file", str(tmp_path / "pw"))
    rows = {u: (h, r) for u, h, r in ctl.sql("select username, password_hash, role from users")}
    assert verify_password(rows["alice"][0], "s3cret passphrase") and rows["alice"][1] == "helper"
    assert verify_password(rows["bob"][0], "other secret words") and rows["bob"][1] == "admin"
    ctl.ok("user", "passwd", "bob", stdin="changed it again\n")
    (h,), = ctl.sql("select password_hash from users where username = 'bob'")
    assert verify_password(h, "changed it again")
    # the web's rule, in the CLI too: twelve characters at least, for add and passwd alike
    line = ctl.fails("user", "passwd", "bob", stdin="short pw 11\n")
    assert line == "mirrorctl: error: password refused: at least 12 characters, please"
    (h2,), = ctl.sql("select password_hash from users where username = 'bob'")
    assert h2 == h
    assert ctl.fails("user", "add", "carol", stdin="eleven char\n").startswith(
        "mirrorctl: error: password refused")


ERRORS = [
    (["show", "de9"], "mirrorctl: error: no mirror named de9"),
    (["add", "--country", "XX", "--host", "a.example"],
     "mirrorctl: error: 'XX' is not an ISO 3166-1 alpha-2 country code (like DE, US, GB)"),
    (["add", "--country", "DE", "--host", "a.example", "--ipv4", "1.2.3"],
     "mirrorctl: error: '1.2.3' is not an IPv4 address"),
    (["add", "--country", "DE", "--host", "a.example", "--url", "gopher://a.example/"],
     "mirrorctl: error: 'gopher://a.example/': only http, https, ftp and rsync URLs are mirror URLs"),
    (["add", "--country", "DE", "--host", "a.example", "--url", "http://a/", "--url", "http://b/"],
     "mirrorctl: error: two http URLs given: http://a/ and http://b/"),
    (["add", "--country", "DE", "--host", "a.example", "--url", "http://a.example/",
      "--maintainer", "Jane"],
     "mirrorctl: error: 'Jane' does not look like a mail address (name@example.org)"),
    (["add", "--country", "DE", "--host", "b.example", "--url", "http://b.example/", "--name",
      "de1"], "mirrorctl: error: name de1 is already used by mirror.example.de"),
    (["add", "--country", "DE", "--host", "c.example"],
     "mirrorctl: error: a mirror needs a URL or an address"),
    (["add", "--country", "UK", "--host", "c.example", "--url", "http://c.example/"],
     "mirrorctl: error: 'UK' is not an ISO 3166-1 alpha-2 country code: did you mean GB"),
    (["add", "--country", "DE", "--host", "mirror.example.de", "--url", "http://x.example/"],
     "mirrorctl: error: mirror.example.de is already in the table as de1"),
    (["add", "--country", "DE", "--host", "c.example", "--url", "ftp://c.example/",
      "--status", "active"], "mirrorctl: error: c.example cannot be active: it has no http"),
    (["edit", "de1", "--host", "other.example.de"],
     "mirrorctl: error: other.example.de is already in the table as de2"),
    (["add", "--host", "a.example"], "mirrorctl add: error: the following arguments are required: "
                                     "--country (see mirrorctl add --help)"),
    (["add", "--country", "DE", "--host", "a.example", "--weight", "heavy"],
     "mirrorctl add: error: argument --weight: invalid float value: 'heavy' (see mirrorctl add --help)"),
    (["frobnicate"], "mirrorctl: error: argument COMMAND: invalid choice: 'frobnicate'"),
    (["edit", "de1"], "mirrorctl: error: nothing to change: give at least one option "
                      "(see mirrorctl edit --help)"),
    (["edit", "de1", "--name", "DE-1"], "mirrorctl: error: 'DE-1' is not a mirror name: "
                                        "two letters and a number, like de2"),
    (["disable", "de1"], "mirrorctl disable: error: the following arguments are required: --reason "
                         "(see mirrorctl disable --help)"),
    (["disable", "de1", "--reason", ""], "mirrorctl: error: disabling a mirror needs a reason "
                                         "(it is mailed to its maintainers)"),
    (["enable", "de1"], "mirrorctl: error: de1 (mirror.example.de) is already active"),
    (["note", "de1", " "], "mirrorctl: error: the note is empty"),
    (["list", "--country", "Germany"], "mirrorctl: error: 'Germany' is not an ISO 3166-1 alpha-2 "
                                       "country code: did you mean DE (Germany)?"),
    (["import", "phpnet-tsv", "missing.tsv"], "mirrorctl: error: missing.tsv: cannot read: "
                                              "No such file or directory"),
    (["import", "phpnet-tsv", "bad.tsv"], "mirrorctl: error: bad.tsv:1: not a php.net mirror TSV"),
    (["import", "mirmon", "bad.tsv"],
     "mirrorctl: error: bad.tsv:1: expected 'cc url [email]', found 4 fields"),
    (["import", "csv", "bad.tsv"], "mirrorctl import: error: argument FORMAT: invalid choice: 'csv'"),
    (["user", "add", "alice"], "mirrorctl: error: password refused: at least 12 characters"),
    (["user", "add", "alice", "--role", "root"],
     "mirrorctl user add: error: argument --role: invalid choice: 'root'"),
    (["user", "add", "Bad Name", "--password-file", "pw"],
     "mirrorctl: error: 'Bad Name' is not a user name: lower-case letters, digits, . _ -"),
    (["user", "add", "admin", "--password-file", "pw"], "mirrorctl: error: user admin exists already"),
    (["user", "passwd", "nobody", "--password-file", "pw"], "mirrorctl: error: no user named nobody"),
    (["user", "add", "carol", "--password-file", "nope"],
     "mirrorctl: error: nope: cannot read: No such file or directory"),
]


def test_every_error_is_one_clear_line_and_changes_nothing(ctl):
    ctl.ok("add", "--country", "DE", "--host", "mirror.example.de", "--ipv4", "192.0.2.10",
           "--url", "http://mirror.example.de/")
    ctl.ok("add", "--country", "DE", "--host", "other.example.de", "--ipv4", "192.0.2.11",
           "--url", "http://other.example.de/")
    ctl.ok("user", "add", "admin", stdin="good password here\n")
    (ctl.dir / "bad.tsv").write_text("de http://a.example/ x y\n")
    (ctl.dir / "pw").write_text("a fine password\n")
    before = [ctl.sql(f"select * from {t}") for t in ("mirrors", "audit", "outbox", "users",
                                                      "table_version", "notes")]
    for args, expected in ERRORS:
        line = ctl.fails(*args, stdin="")
        assert line.startswith(expected), (args, line)
    after = [ctl.sql(f"select * from {t}") for t in ("mirrors", "audit", "outbox", "users",
                                                     "table_version", "notes")]
    assert after == before


def test_no_schema_and_config_errors_are_one_line(tmp_path):
    ctl = Ctl(tmp_path)
    for cmd in (["list"], ["outbox", "list"],
                ["add", "--country", "DE", "--host", "a.example", "--url", "http://a.example/"]):
        assert ctl.fails(*cmd) == (f"mirrorctl: error: there is no table at {ctl.db}: run "
                                   "`mirrorctl db upgrade` to create it (or give --config with "
                                   "the right [database] url)"), cmd
    assert not ctl.db.exists() and not ctl.db.parent.exists()      # read-only: nothing created
    ctl.db.parent.mkdir()
    ctl.db.write_bytes(b"")                                          # a file, but no schema
    assert ctl.fails("list") == ("mirrorctl: error: the database has no mirrordns schema yet: "
                                 "run `mirrorctl db upgrade` first")
    ctl.config.write_text('[database]\nurl = "sqlite:///var/m.sqlite"\ncolour = "blue"\n')
    assert ctl.fails("list") == (f"mirrorctl: error: {ctl.config}: unknown key 'colour' in "
                                 "[database] (allowed: pool_threads, url)")
    ctl.config.write_text('[probes]\ninterval = "often"\n')
    assert ctl.fails("list") == (f"mirrorctl: error: {ctl.config}: [probes] interval: expected "
                                 "an integer, got a string")
    ctl.config.write_text('[dns\n')
    assert ctl.fails("list").startswith(f"mirrorctl: error: {ctl.config}: not valid TOML: ")
    assert ctl.fails("--config", "nowhere.toml", "list", config=False) == \
        "mirrorctl: error: nowhere.toml: configuration file not found"
    # $MIRRORDNS_CONFIG is used when there is no --config, and named when it is missing
    assert ctl.fails("list", config=False, env={"MIRRORDNS_CONFIG": "env.toml"}) == \
        "mirrorctl: error: env.toml: configuration file not found"
    ctl.config.write_text('[database]\nurl = "nosuchdb://x"\n')
    assert ctl.fails("list").startswith("mirrorctl: error: [database] url: ")


def test_config_lookup_falls_back_to_the_working_directory(tmp_path):
    """Without --config or $MIRRORDNS_CONFIG, ./mirrordns.toml is read."""
    ctl = Ctl(tmp_path)
    r = ctl("db", "upgrade", config=False)
    assert r.returncode == 0 and (tmp_path / "var" / "m.sqlite").exists()


def test_a_closed_pipe_ends_quietly(ctl):
    """`mirrorctl list | head`: when the reader has gone, no traceback, only a non-zero exit."""
    ctl.ok("add", "--country", "DE", "--host", "mirror.example.de",
           "--url", "http://mirror.example.de/")
    r, w = os.pipe()
    os.close(r)                      # the reader is gone before mirrorctl writes a byte
    try:
        e = {k: v for k, v in os.environ.items() if k != "MIRRORDNS_CONFIG"}
        p = subprocess.run([sys.executable, "-m", "admin.cli", "--config", str(ctl.config),
                            "list", "--json"], stdout=w, stderr=subprocess.PIPE, text=True,
                           cwd=ctl.dir, env=e, timeout=60, check=False)
    finally:
        os.close(w)
    assert p.returncode != 0
    assert p.stderr == ""


def _health(ctl, name: str, **values):
    """Write what the probes would have found for one mirror (times relative to now)."""
    from dnsd.models import mirror_health, mirrors, utcnow

    now = utcnow()
    e = sa.create_engine(f"sqlite:///{ctl.db}")
    try:
        with e.begin() as c:
            mid = c.execute(sa.select(mirrors.c.id).where(mirrors.c.name == name)).scalar_one()
            row = {k: (now - v if isinstance(v, _dt.timedelta) else v) for k, v in values.items()}
            c.execute(mirror_health.insert().values(mirror_id=mid, updated_at=now, **row))
    finally:
        e.dispose()


def test_show_prints_rounded_figures_and_ages_in_human_units(ctl):
    ctl.ok("add", "--country", "DE", "--host", "ftp.example.de", "--ipv4", "192.0.2.10",
           "--url", "http://ftp.example.de/", "--memory", "16", "--disk", "2500")
    _health(ctl, "de1", passes_in_row=3, ipv4_up=True, uptime_24h=0.99583333,
            uptime_7d=0.987654, uptime_30d=0.9912345, rtt_p50_ms=123.456789, rtt_p95_ms=4.56789,
            last_probe_at=_dt.timedelta(hours=2, minutes=5, seconds=30),
            last_ok_at=_dt.timedelta(minutes=30, seconds=30),
            last_sync_at=_dt.timedelta(hours=3, minutes=25, seconds=30))
    show = ctl.ok("show", "de1")
    assert re.search(r"last probe \d{4}-\d\d-\d\d \d\d:\d\d \(2 h 5 min ago\), "
                     r"last ok \S+ \S+ \(30 min ago\)", show), show
    assert "synced 3 h 25 min ago (fresh), 0 failures in a row" in show
    assert "uptime 24 h 99.6%, 7 d 98.8%, 30 d 99.1%; response p50 123 ms, p95 4.6 ms" in show
    assert "16 GB memory, 2500 GB disk" in show
    assert "123.45" not in show and "0.9876" not in show
    assert re.search(r"status      active since \S+ \S+ \(\d+ s ago\)", show), show


def test_audit_names_mirrors_and_says_when_one_is_gone(ctl):
    ctl.ok("add", "--country", "DE", "--host", "ftp.example.de", "--url", "http://ftp.example.de/")
    ctl.ok("add", "--country", "DE", "--host", "gone.example.de", "--url",
           "http://gone.example.de/")
    ctl.ok("disable", "de2", "--reason", "moving racks")
    ctl.ok("user", "add", "bob", stdin="a fine password\n")
    e = sa.create_engine(f"sqlite:///{ctl.db}")             # deleted by hand, FKs off
    try:
        with e.begin() as c:
            c.exec_driver_sql("PRAGMA foreign_keys=OFF")
            c.exec_driver_sql("DELETE FROM mirrors WHERE name = 'de2'")
    finally:
        e.dispose()
    lines = ctl.ok("audit").splitlines()
    assert lines[0].split() == ["WHEN", "WHO", "WHAT", "TARGET", "CHANGES"]
    rows = [re.split(r"\s{2,}", line) for line in lines[1:]]
    assert [r[2:4] for r in rows] == [["user-add", "user bob"], ["disable", "#2 (deleted)"],
                                      ["add", "#2 (deleted)"], ["add", "de1 (ftp.example.de)"]]
    assert rows[1][4] == "status: active -> disabled-by-admin; status_reason: - -> moving racks"
    assert "hostname: ftp.example.de" in rows[3][4]
    assert "#1" not in ctl.ok("audit", "de1")
    shown = json.loads(ctl.ok("audit", "de1", "--json"))
    assert [(a["action"], a["mirror_name"], a["mirror_host"]) for a in shown] == [
        ("add", "de1", "ftp.example.de")]
