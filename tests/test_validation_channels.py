"""One table of inputs, four ways in: mirrorctl, the admin web, the JSON API and the importer
refuse and accept the same mirrors, with the same reasons (dnsd.validation is their one rule).

Every case is run through every channel that can express it (a mirmon line `cc url [email]` has
no addresses and no display names), on SQLite and PostgreSQL. A refused input leaves nothing in
the table; an accepted one is there with the cleaned values.
"""

from __future__ import annotations

import html
import json
from dataclasses import dataclass, field, replace

import sqlalchemy as sa
from treq.testing import StubTreq
from twisted.trial.unittest import SynchronousTestCase

from admin import cli, importers, store
from admin.store import MailSettings
from admin.web import build_root
from dnsd.models import mirrors
from dnsd.records import maintainers as _maint
from dnsd.records.maintainers import Maintainer
from dnsd.validation import Rules
from tests.webfakes import add_user, csrf_of, login, make_ctx

# The zone file's names a mirror may not take (the default [dns] zone, mirrors.example.org)
ZONE_FILE = """$ORIGIN mirrors.example.org.
@       SOA  ns1 hostmaster 1 3600 600 604800 60
@       NS   ns1
ns1     A    192.0.2.53
de7     A    192.0.2.7
de8     NS   ns.example.net.
x.de9   TXT  "below de9"
"""
PUBLIC_V4 = "93.184.216.34"
PUBLIC_V6 = "2606:2800:220:1:248:1893:25c8:1946"
TAKEN = "taken.example.net"


@dataclass
class Case:
    id: str
    urls: tuple = ("http://{host}/pub/",)
    country: str = "DE"
    host: str = ""
    ipv4: str | None = None
    ipv6: str | None = None
    maintainer: tuple | None = None      # (name, email)
    refused: str = ""                    # a part of the message; "" = accepted
    status: str = "active"               # when accepted (the web form adds pending mirrors)
    importer: bool = True                # a mirmon line can say it
    people: tuple = field(default=())    # expected maintainers when accepted
    name: str | None = None              # a ccN name asked for (the importer: a php.net line)

    def hostname(self, n: int) -> str:
        return self.host or f"c{n}.example.net"

    def url_list(self, n: int) -> list[str]:
        return [u.format(host=self.hostname(n)) for u in self.urls]


CASES = [
    Case("http url"),
    Case("https url and pinned addresses", urls=("https://{host}/",), ipv4=PUBLIC_V4,
         ipv6=PUBLIC_V6, importer=False),
    Case("lower-case country", country="de"),
    Case("no url and no address", urls=(), refused="needs a URL or an address", importer=False),
    Case("an address and no url", urls=(), ipv4=PUBLIC_V4, status="pending", importer=False),
    Case("ftp only", urls=("ftp://{host}/pub/",), status="pending"),
    Case("rsync only", urls=("rsync://{host}/pub/",), status="pending"),
    Case("private ipv4", ipv4="10.0.0.1", refused="private, loopback or reserved",
         importer=False),
    Case("loopback ipv6", ipv6="::1", refused="private, loopback or reserved", importer=False),
    Case("reserved ipv4", ipv4="240.0.0.1", refused="private, loopback or reserved",
         importer=False),
    Case("private ip literal in the url", host="10.1.2.3", urls=("http://10.1.2.3/pub/",),
         refused="private, loopback or reserved"),
    Case("not an ipv4", ipv4="192.0.2.300", refused="is not an IPv4 address", importer=False),
    Case("UK", country="UK", refused="did you mean GB (United Kingdom)?", importer=False),
    Case("alpha-3", country="DEU", refused="did you mean DE (Germany)?"),
    Case("no such country", country="XX", refused="is not an ISO 3166-1 alpha-2 country code"),
    Case("quote in url", urls=('http://{host}/a"b/',), refused="must not hold spaces or any of"),
    Case("angle brackets in url", urls=("http://{host}/<x>/",),
         refused="must not hold spaces or any of"),
    Case("CR LF in url", urls=("http://{host}/\r\nX-Injected: 1",),
         refused="must not hold control characters", importer=False),
    Case("NUL in url", urls=("http://{host}/a\x00b/",), refused="must not hold control",
         importer=False),
    Case("credentials in url", urls=("http://user:pw@{host}/",),
         refused="must not carry a user name or password"),
    Case("query in url", urls=("http://{host}/?x=1",), refused="no ?query"),
    Case("scheme not a mirror's", urls=("gopher://{host}/",),
         refused="only http, https, ftp and rsync"),
    Case("bad host name", host="bad_host!.example", urls=("http://bad_host!.example/",),
         refused="is not a host name"),
    Case("a comma in a maintainer's name", maintainer=("Doe, Jane", "jane@example.org"),
         people=(Maintainer("Doe, Jane", "jane@example.org"),), importer=False),
    Case("bare maintainer address", maintainer=("", "ada@example.org"),
         people=(Maintainer("", "ada@example.org"),)),
    Case("not a mail address", maintainer=("", "not-an-address"),
         refused="does not look like a mail address"),
    Case("NUL in a maintainer's name", maintainer=("Jane\x00Doe", "jane@example.org"),
         refused="must not hold control characters", importer=False),
    Case("host already in the table", host=TAKEN, refused="is already in the table"),
    Case("a name of its own", name="de55"),
    Case("a name the zone file holds", name="de7", refused="the name de7 is taken by the zone "
         "file: de7.mirrors.example.org is also a name in {zone}: de7.mirrors.example.org. 3600 "
         "IN A 192.0.2.7"),
    Case("a name the zone file delegates", name="de8", refused="de8.mirrors.example.org is "
         "delegated (NS) in {zone}: de8.mirrors.example.org. 3600 IN NS ns.example.net."),
    Case("a name above a zone file's name", name="de9", refused="de9.mirrors.example.org is "
         "also a name in {zone}, above x.de9.mirrors.example.org: x.de9.mirrors.example.org. "
         '3600 IN TXT "below de9"'),
]


def _url_field(u: str) -> str:
    return f"{u.split(':', 1)[0].lower()}_url"


def _one_field_per_scheme(c: Case, n: int) -> bool:
    """The web form and the API have a field per scheme: a gopher URL has no field to go in."""
    return all(u.split(":", 1)[0] in ("http", "https", "ftp", "rsync") for u in c.url_list(n))


def _zone(folder) -> str:
    path = folder / "zone"
    path.write_text(ZONE_FILE)
    return str(path)


def _seed(engine):
    with engine.begin() as conn:
        store.add_mirror(conn, actor="seed", mail=None, country="DE", hostname=TAKEN,
                         http_url=f"http://{TAKEN}/")


def _check(engine, case: Case, n: int, outcome: str, channel: str, zone: str) -> None:
    """`outcome` is '' for accepted, else the message the channel gave; `zone` the zone file."""
    host = case.hostname(n).lower()
    with engine.connect() as conn:
        rows = conn.execute(sa.select(mirrors.c.id, mirrors.c.status, mirrors.c.country,
                                      mirrors.c.name)
                            .where(mirrors.c.hostname == host)).all()
        people = _maint.of(conn, [r.id for r in rows])
    where = f"{channel}: {case.id}"
    if case.refused:
        assert case.refused.format(zone=zone) in outcome, f"{where}: {outcome!r}"
        assert "\n" not in outcome.strip(), where
        assert len(rows) == (1 if host == TAKEN else 0), f"{where}: something was written"
        return
    assert outcome == "", f"{where}: refused with {outcome!r}"
    assert len(rows) == 1, where
    want = "pending" if channel == "web" else case.status
    assert rows[0].status == want and rows[0].country == case.country.upper(), where
    if case.name:
        assert rows[0].name == case.name, where
    if case.people:
        assert people[rows[0].id] == case.people, where


def _cases(importer_only=False):
    return [(n, c) for n, c in enumerate(CASES, 1) if c.importer or not importer_only]


# --- the channels --------------------------------------------------------------------------------

def test_mirrorctl(engine, tmp_path, capsys):
    _seed(engine)
    zone = _zone(tmp_path)
    url = engine.url.render_as_string(hide_password=False)
    cfgfile = tmp_path / "m.toml"
    cfgfile.write_text(f'[database]\nurl = "{url}"\n[dns]\nzone_file = "zone"\n')
    for n, c in _cases():
        argv = ["--config", str(cfgfile), "--actor", "t", "add", "--country", c.country,
                "--host", c.hostname(n)] + (["--name", c.name] if c.name else [])
        for u in c.url_list(n):
            argv += ["--url", u]
        for fam in ("ipv4", "ipv6"):
            if getattr(c, fam):
                argv += [f"--{fam}", getattr(c, fam)]
        if c.maintainer:
            name, mail = c.maintainer
            argv += ["--maintainer", f"{name} <{mail}>" if name else mail]
        rc = cli.main(argv)
        err = capsys.readouterr().err.strip()
        assert (rc != 0) == bool(err), (c.id, rc, err)
        _check(engine, c, n, err, "mirrorctl", zone)


PHPNET_HEAD = ("url\thostname\tcountry_alpha3\tprovider_name\thas_stats\tprovider_url\t"
               "mirror_type\thas_sqlite\tdefault_lang\tstatus\n")


def test_importer(engine, tmp_path):
    """mirmon lines (`cc url [email]`), and php.net lines for the cases with a name (php.net's
    host names carry it: de7.php.net is de7)."""
    _seed(engine)
    zone = _zone(tmp_path)
    rules = Rules(zone="mirrors.example.org", zone_file=zone)
    mail = MailSettings(sender="m@example.org", list="l@example.org")
    for n, c in _cases(importer_only=True):
        if c.name:
            c = replace(c, host=f"{c.name}.php.net")
            line = (PHPNET_HEAD + f"http://{c.host}/\t{c.host}\tDEU\tP\tfalse\t\t"
                    f"MIRROR_STANDARD\ttrue\ten\tMIRROR_OK\n")
            parsed, fmt = importers.parse_phpnet_tsv(line, "l"), "phpnet-tsv"
        else:
            (u,) = c.url_list(n) or ("",)
            line = f"{c.country} {u}" + (f" {c.maintainer[1]}" if c.maintainer else "")
            parsed, fmt = importers.parse_mirmon(line + "\n", "l"), "mirmon"
        with engine.begin() as conn:
            rep = importers.apply(conn, parsed, actor="t", mail=mail, fname="l", fmt=fmt,
                                  rules=rules)
        outcome = "; ".join(s.reason for s in rep.skipped)
        _check(engine, c, n, outcome, "importer", zone)


def test_automatic_names_skip_the_zone_files_and_renames_are_refused(engine, tmp_path,
                                                                       capsys):
    """Without --name a mirror gets the lowest ccN free in the table and in the zone file;
    renaming one to a name of the zone file is refused the same way."""
    zone = _zone(tmp_path)
    url = engine.url.render_as_string(hide_password=False)
    cfgfile = tmp_path / "m.toml"
    cfgfile.write_text(f'[database]\nurl = "{url}"\n[dns]\nzone_file = "zone"\n')
    base = ["--config", str(cfgfile), "--actor", "t"]
    names = []
    for i in range(8):
        assert cli.main([*base, "add", "--country", "DE", "--host", f"auto{i}.example.net",
                         "--url", f"http://auto{i}.example.net/"]) == 0
        names.append(capsys.readouterr().out.split(":")[0].strip())
    assert names == ["de1", "de2", "de3", "de4", "de5", "de6", "de10", "de11"]
    assert cli.main([*base, "edit", "de10", "--name", "de8"]) == 1
    err = capsys.readouterr().err
    assert "the name de8 is taken by the zone file: de8.mirrors.example.org is delegated (NS) " \
           f"in {zone}" in err
    assert cli.main([*base, "edit", "de10", "--name", "de12"]) == 0


class WebAndAPI(SynchronousTestCase):
    """The admin web's form and the API's POST /api/mirrors (SQLite; the store calls are the
    same ones mirrorctl's test runs on PostgreSQL too)."""

    def setUp(self):
        import tempfile
        from pathlib import Path

        from dnsd.db import make_engine, upgrade

        self.tmp = tempfile.mkdtemp()
        self.engine = make_engine(f"sqlite:///{self.tmp}/m.sqlite")
        upgrade(self.engine)
        _seed(self.engine)
        self.zone = _zone(Path(self.tmp))
        self.ctx = make_ctx(self.engine, f'[dns]\nzone_file = "{self.zone}"\n')
        add_user(self.engine, "root")
        self.stub = StubTreq(build_root(self.ctx))

    def tearDown(self):
        self.engine.dispose()

    def test_admin_web(self):
        csrf = login(self, self.stub, "root")
        for n, c in [(n, c) for n, c in _cases() if _one_field_per_scheme(c, n)]:
            form = {"csrf": csrf, "hostname": c.hostname(n), "country": c.country,
                    "ipv4": c.ipv4 or "", "ipv6": c.ipv6 or "", "weight": "1",
                    "maintainers": "", "name": c.name or ""}
            for u in c.url_list(n):
                form[_url_field(u)] = u
            if c.maintainer:
                name, mail = c.maintainer
                form["maintainers"] = f"{name} <{mail}>" if name else mail
            r = self.successResultOf(self.stub.post("http://admin.test/admin/mirrors/new",
                                                    data=form, allow_redirects=False))
            body = self.successResultOf(r.content()).decode()
            outcome = ""
            if r.code != 303:
                assert r.code == 400, (c.id, r.code)
                errs = [html.unescape(x.split("</span>")[0])
                        for x in body.split('class="field-error"')[1:]]
                outcome = " | ".join(e.split(">", 1)[1] for e in errs) or "?"
            _check(self.engine, c, n, outcome.replace("\n", " "), "web", self.zone)
            csrf = csrf_of(self.successResultOf(self.successResultOf(
                self.stub.get("http://admin.test/admin/mirrors/new")).content()))

    def test_api(self):
        from admin.web import api
        with self.engine.begin() as conn:
            token = api.issue_token(conn, "root")
        for n, c in [(n, c) for n, c in _cases() if _one_field_per_scheme(c, n)]:
            body = {"hostname": c.hostname(n), "country": c.country}
            if c.name:
                body["name"] = c.name
            for u in c.url_list(n):
                body[_url_field(u)] = u
            for fam in ("ipv4", "ipv6"):
                if getattr(c, fam):
                    body[fam] = getattr(c, fam)
            if c.maintainer:
                body["maintainers"] = [{"name": c.maintainer[0], "email": c.maintainer[1]}]
            r = self.successResultOf(self.stub.post(
                "http://admin.test/api/mirrors", data=json.dumps(body).encode(),
                headers={"Authorization": f"Bearer {token}",
                         "Content-Type": "application/json"}))
            data = json.loads(self.successResultOf(r.content()))
            outcome = "" if r.code == 201 else data["error"]
            if outcome:
                assert r.code in (400, 409), (c.id, r.code)
                assert r.code == (409 if "already in the table" in outcome else 400), c.id
            else:
                assert data["hostname"] == c.hostname(n).lower()
                assert data["serving"] is False                   # never probed yet
            _check(self.engine, c, n, outcome, "api", self.zone)
