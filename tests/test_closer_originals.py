"""What Apache's closer.lua / mirrors.cgi and MirrorBrain did, on a real listener on 127.0.0.1:
the admin web tree (build_root) with a document root, a dist tree, an attic, a fake origin and a
fake archive (static file servers on loopback, reached through the guarded client with
[probes] allow_private), and mirrors from a plan. Each test names the original behaviour."""

from __future__ import annotations

import datetime as dt
import json
from pathlib import Path

import pytest_twisted
import treq
from lxml import etree
from twisted.internet import defer, reactor
from twisted.web import resource
from twisted.web.server import Site
from twisted.web.static import File

from admin.web import build_root
from admin.web.framework import WebContext
from dnsd.config import parse_config
from dnsd.plan import build_plan, row
from tests.closer_support import BACKUPS, SERVING_WEB, Holder, make_plan, standard_rows
from tests.webfakes import SyncPool

SCHEMA = etree.RelaxNG(etree.parse(str(Path(__file__).parent / "fixtures" / "metalink4.rng")))
ML = "{urn:ietf:params:xml:ns:metalink}"
DE = {SERVING_WEB["de1"], SERVING_WEB["de2"]}
TARBALL = "httpd/httpd-2.4.66.tar.gz"
SHA256 = "ab" * 32
SHA512 = "cd" * 64


class Site_:
    """The closer on a real port, with its files; `get(path)` -> (response, text)."""

    def __init__(self, tmp_path: Path, extra: str = "", rows=None, plan_at=None,
                 origin="https://downloads.example.org/"):
        self.tmp = tmp_path
        self.doc, self.dist, self.attic = (tmp_path / n for n in ("www", "dist", "attic"))
        for d in (self.doc / "httpd", self.dist / "httpd", self.dist / "oldproj", self.attic):
            d.mkdir(parents=True, exist_ok=True)
        (self.doc / "httpd" / "download.html").write_text(
            "<p>Get it from <a href=\"[preferred]httpd/httpd-2.4.66.tar.gz\">here</a>, "
            "verify with <a href=\"[origin]httpd/KEYS\">KEYS</a> and "
            "<a href=\"[origin]httpd/httpd-2.4.66.tar.gz.asc\">asc</a>.</p>"
            "[for rsync]<span class=rsync>[rsync]</span>[end]")
        (self.dist / TARBALL).write_bytes(b"x" * 1234)
        (self.dist / (TARBALL + ".sha256")).write_text(f"{SHA256}  httpd-2.4.66.tar.gz\n")
        (self.dist / (TARBALL + ".sha512")).write_text(
            f"SHA512 (httpd-2.4.66.tar.gz) = {SHA512}\n")
        (self.dist / "httpd" / "README").write_text("r")
        (self.attic / "oldproj.html").write_text("<p>retired</p>")
        self.archive_dir = tmp_path / "archive"
        (self.archive_dir / "dist" / "httpd").mkdir(parents=True)
        (self.archive_dir / "dist" / "httpd" / "httpd-2.2.0.tar.gz").write_bytes(b"old")
        self.archive_heads = []
        heads = self.archive_heads

        class Recording(resource.Resource):
            def __init__(self, inner):
                super().__init__()
                self.inner = inner

            def getChildWithDefault(self, name, request):
                heads.append((request.method, request.path.decode()))
                return self.inner.getChildWithDefault(name, request)

        self.archive_port = reactor.listenTCP(0, Site(Recording(File(str(self.archive_dir)))),
                                              interface="127.0.0.1")
        archive = f"http://127.0.0.1:{self.archive_port.getHost().port}/dist/"
        text = f"""
[probes]
allow_private = true
[closer]
document_root = "{self.doc}"
dist_root = "{self.dist}"
attic_root = "{self.attic}"
attic_url = "https://attic.example.org/projects/"
archive_url = "{archive}"
origin_url = "{origin}"
{extra}
"""
        self.cfg = parse_config(text)
        plan = (make_plan(standard_rows(), self.cfg) if rows is None else
                build_plan({"version": 1, "mirrors": rows}, self.cfg, plan_at))
        self.ctx = WebContext(cfg=self.cfg, pool=SyncPool(None), reactor=reactor,
                              plan=Holder(plan))
        root = build_root(self.ctx)
        from admin import closer

        self.refresher = closer.refresher(root)
        self.refresher.startService()            # dist index and attic list, on worker threads
        self.port = reactor.listenTCP(0, Site(root), interface="127.0.0.1")
        self.base = f"http://127.0.0.1:{self.port.getHost().port}"

    async def ready(self):
        """Until the first dist walk and attic listing are in (polled, with a deadline)."""
        from tests.dns_support import until

        pages = self.port.factory.resource.children[b"dyn"].closer
        await until(lambda: pages.dist.built_at is not None and "oldproj" in pages.attic,
                    timeout=10)
        return pages

    async def get(self, path, **kw):
        resp = await treq.get(self.base + path, allow_redirects=False, **kw)
        return resp, await resp.text()

    async def close(self):
        self.refresher.stopService()
        await self.port.stopListening()
        await self.archive_port.stopListening()


def header(resp, name):
    v = resp.headers.getRawHeaders(name)
    return v[0] if v else None


async def site(tmp_path, extra="", **kw) -> Site_:
    s = Site_(tmp_path, extra, **kw)
    await s.ready()
    return s


# --- the origin: what must not be mirrored ---------------------------------------------------

@pytest_twisted.ensureDeferred
async def test_checksums_signatures_and_keys_come_from_the_origin_never_a_mirror(tmp_path):
    """Apache's release policy: KEYS, .asc and checksum files are linked from the main site."""
    s = await site(tmp_path, '[closer.origins]\nincubator = "https://incubator.example.org/d/"')
    try:
        for f in ("httpd/KEYS", TARBALL + ".asc", TARBALL + ".sha512", TARBALL + ".sha256",
                  TARBALL + ".md5", TARBALL + ".sha1", "httpd/x.sig"):
            resp, _ = await s.get(f"/dyn/closer.lua?action=download&filename={f}&cca2=de")
            assert resp.code == 302 and header(resp, "location") == \
                f"https://downloads.example.org/{f}", f
            assert header(resp, "link") is None         # no mirror to fall back on
        resp, _ = await s.get("/dyn/closer/incubator/foo/KEYS?action=download")
        assert header(resp, "location") == "https://incubator.example.org/d/incubator/foo/KEYS"
        resp, _ = await s.get(f"/dyn/closer.lua?action=download&filename={TARBALL}&cca2=de")
        assert header(resp, "location") in {u + TARBALL for u in DE}   # the tarball: a mirror
        # the page's [origin]
        resp, body = await s.get("/httpd/download.cgi?cca2=de")
        assert resp.code == 200
        assert 'href="https://downloads.example.org/httpd/KEYS"' in body
        assert 'href="https://downloads.example.org/httpd/httpd-2.4.66.tar.gz.asc"' in body
        d = json.loads((await s.get("/dyn/closer/httpd/?as_json=1"))[1])
        assert d["origin"] == "https://downloads.example.org/"
    finally:
        await s.close()


@pytest_twisted.ensureDeferred
async def test_without_an_origin_keys_are_a_404_not_a_mirror(tmp_path):
    s = await site(tmp_path, origin="")
    try:
        resp, body = await s.get("/dyn/closer.lua?action=download&filename=httpd/KEYS")
        assert resp.code == 404 and "only from the project's own site" in body
        assert header(resp, "location") is None
        _resp, body = await s.get("/httpd/download.cgi?cca2=de")
        assert 'href="httpd/KEYS"' in body                  # [origin] is empty
    finally:
        await s.close()


# --- closer.lua: attic, archive ----------------------------------------------------------------

@pytest_twisted.ensureDeferred
async def test_a_retired_project_goes_to_its_attic_page(tmp_path):
    """closer.lua: a project with <attic>/<project>.html redirects there; JSON says in_attic."""
    s = await site(tmp_path)
    try:
        resp, _ = await s.get("/dyn/closer/oldproj/oldproj-1.0.tar.gz")
        assert resp.code == 302
        assert header(resp, "location") == "https://attic.example.org/projects/oldproj.html"
        d = json.loads((await s.get("/dyn/closer/oldproj/?as_json=1"))[1])
        assert d["in_attic"] is True
        d = json.loads((await s.get("/dyn/closer/httpd/?as_json=1"))[1])
        assert d["in_attic"] is False and d["in_dist"] is True
        # a page retired after start: the list is walked again every dist_refresh
        (s.attic / "httpd.html").write_text("gone")
        pages = s.port.factory.resource.children[b"dyn"].closer
        await pages.attic.refresh()
        resp, _ = await s.get("/dyn/closer/httpd/")
        assert header(resp, "location") == "https://attic.example.org/projects/httpd.html"
    finally:
        await s.close()


@pytest_twisted.ensureDeferred
async def test_not_in_dist_page_with_the_archive_lookup_cached(tmp_path):
    """closer.lua's archive_aware: a HEAD to the archive; a positive answer kept, a negative
    one for 30 minutes; without archive_aware only a link."""
    s = await site(tmp_path)
    try:
        resp, body = await s.get("/dyn/closer/httpd/httpd-2.2.0.tar.gz")
        assert resp.code == 404 and "It may be in our archive" in body
        assert s.archive_heads == []                        # not asked without archive_aware
        for _ in range(2):
            resp, body = await s.get("/dyn/closer/httpd/httpd-2.2.0.tar.gz?archive_aware=1")
            assert resp.code == 404 and "The object is in our archive" in body
            assert "/dist/httpd/httpd-2.2.0.tar.gz" in body
        assert s.archive_heads == [(b"HEAD", "/dist/httpd/httpd-2.2.0.tar.gz")]   # once
        for _ in range(2):
            resp, body = await s.get("/dyn/closer/httpd/httpd-0.9.tar.gz?archive_aware=1")
            assert "The object is not in our archive" in body
        assert len(s.archive_heads) == 2                    # the negative answer is kept too
        pages = s.port.factory.resource.children[b"dyn"].closer
        hit = pages.archive._cache["httpd/httpd-0.9.tar.gz"]
        pages.archive._cache["httpd/httpd-0.9.tar.gz"] = (hit[0], hit[1] - 1801)  # 30 min later
        await s.get("/dyn/closer/httpd/httpd-0.9.tar.gz?archive_aware=1")
        assert len(s.archive_heads) == 3                    # ... for 30 minutes only
        pages.archive._cache["httpd/httpd-2.2.0.tar.gz"] = ("found", 0.0)       # long ago
        await s.get("/dyn/closer/httpd/httpd-2.2.0.tar.gz?archive_aware=1")
        assert len(s.archive_heads) == 3                    # a positive one for good
        await s.archive_port.stopListening()                # the archive is down
        resp, body = await s.get("/dyn/closer/httpd/httpd-0.8.tar.gz?archive_aware=1")
        assert resp.code == 404 and "failed" in body and "Try" in body
    finally:
        s.archive_port.stopListening = lambda: defer.succeed(None)
        await s.close()


@pytest_twisted.ensureDeferred
async def test_the_archive_lookup_is_behind_the_private_address_guard(tmp_path):
    """Without [probes] allow_private the archive on loopback is never contacted."""
    from admin.closer.archive import FAILED, ArchiveLookup
    from admin.closer.heads import GuardedHead

    s = await site(tmp_path)
    try:
        guarded = ArchiveLookup(s.cfg.closer.archive_url, GuardedHead(reactor, 2.0), reactor)
        assert await guarded.lookup("httpd/httpd-2.2.0.tar.gz") == FAILED
        assert s.archive_heads == []
    finally:
        await s.close()


# --- mirrors.cgi: update=, ccode, location ------------------------------------------------------

def _fresh_and_old_rows(now):
    h = dt.timedelta(hours=1)
    common = {"last_probe_at": now, "last_ok_at": now}
    return [
        row(id=1, ipv4="192.0.2.1", name="de1", hostname="de1.example.org", country="DE",
            https_url="https://de1.example.org/", last_sync_at=now - 2 * h, **common),
        row(id=2, ipv4="192.0.2.2", name="de2", hostname="de2.example.org", country="DE",
            https_url="https://de2.example.org/", last_sync_at=now - 10 * h, **common),
        row(id=3, ipv4="192.0.2.3", name="de3", hostname="de3.example.org", country="DE",
            https_url="https://de3.example.org/", last_sync_at=now - 12 * h, **common),
        row(id=4, ipv4="192.0.2.4", name="at1", hostname="at1.example.at", country="AT",
            https_url="https://at1.example.at/", last_sync_at=now - 1 * h, **common),
        row(id=5, ipv4="192.0.2.5", name=None, hostname="bk.example.org", country="US",
            backup=True, https_url="https://bk.example.org/", last_sync_at=now - 60 * h,
            **common),
    ]


@pytest_twisted.ensureDeferred
async def test_update_asks_for_a_mirror_synced_since_then_never_older_than_three_days(tmp_path):
    """mirrors.cgi: update=YYYYMMDDhhmm is the least freshness of the preferred mirror, and
    never a time more than three days back; a tier it empties borrows from the next."""
    now = dt.datetime.now(dt.UTC).replace(tzinfo=None)
    s = await site(tmp_path, "", rows=_fresh_and_old_rows(now), plan_at=now)
    try:
        def stamp(t):
            return t.strftime("%Y%m%d%H%M")

        async def preferred(q):
            return {json.loads((await s.get(f"/dyn/closer/httpd/?as_json=1&cca2=de{q}"))[1])
                    ["preferred"] for _ in range(30)}

        assert await preferred("") == {"https://de1.example.org/", "https://de2.example.org/",
                                       "https://de3.example.org/"}
        # synced within the last 11 hours: de1, de2 (de3 is 12 h old)
        assert await preferred(f"&update={stamp(now - dt.timedelta(hours=11))}") == {
            "https://de1.example.org/", "https://de2.example.org/"}
        # within 3 hours: only de1 in Germany, fewer than min_candidates: Western Europe's
        assert await preferred(f"&update={stamp(now - dt.timedelta(hours=3))}") == {
            "https://de1.example.org/", "https://at1.example.at/"}
        # newer than every mirror: the backup (60 h old: backups are not age-filtered)
        assert await preferred(f"&update={stamp(now + dt.timedelta(minutes=30))}") == {
            "https://bk.example.org/"}
        # a week ago counts as three days ago: all three, as without update
        assert len(await preferred(f"&update={stamp(now - dt.timedelta(days=7))}")) == 3
        # not a time: ignored, as mirrors.cgi ignored it
        assert len(await preferred("&update=soon")) == 3
        resp, _ = await s.get(f"/dyn/closer.lua?action=download&filename={TARBALL}&cca2=de"
                              f"&update={stamp(now - dt.timedelta(hours=3))}")
        assert header(resp, "location").split("/httpd/")[0] + "/" in {
            "https://de1.example.org/", "https://at1.example.at/"}
    finally:
        await s.close()


@pytest_twisted.ensureDeferred
async def test_ccode_chooses_the_country_and_json_says_where_it_was_asked(tmp_path):
    """mirrors.cgi: ccode=[a-z]{2} sets the region (anything else is ignored) and the JSON
    carries `location`, the script's own address; closer.lua's fields are there too."""
    s = await site(tmp_path)
    try:
        d = json.loads((await s.get("/dyn/closer.cgi/httpd/?asjson=1&ccode=fr"))[1])
        assert d["cca2"] == "fr" and d["http"][0] == SERVING_WEB["fr1"]     # nearest first
        assert d["location"] == "/dyn/closer.cgi"
        assert {"path_info", "preferred", "http", "ftp", "backup", "in_dist", "in_attic",
                "cca2", "location", "rsync"} <= set(d)
        assert d["backup"] == [BACKUPS["bk1"], BACKUPS["bk2"]] or \
            set(d["backup"]) == set(BACKUPS.values())
        d = json.loads((await s.get("/dyn/closer.cgi/httpd/?asjson=1&ccode=FRANCE"))[1])
        assert d["cca2"] == ""                              # ignored: no geo for 127.0.0.1
        d = json.loads((await s.get("/httpd/download.cgi?as_json=1&ccode=de"))[1])
        assert d["location"] == "/httpd/download.cgi" and d["preferred"] in DE
    finally:
        await s.close()


@pytest_twisted.ensureDeferred
async def test_rsync_list_for_templates_and_json(tmp_path):
    """closer.lua kept an rsync list per country beside http and ftp."""
    rows = standard_rows()
    rows[0] = row(id=1, ipv4="192.0.2.1", name="de1", hostname="de1.example.org", country="DE",
                  https_url=SERVING_WEB["de1"], rsync_url="rsync://de1.example.org/apache/",
                  last_probe_at=rows[0].health.last_probe_at, last_ok_at=rows[0].health.last_ok_at,
                  last_sync_at=rows[0].health.last_sync_at)
    from tests.closer_support import T0

    s = await site(tmp_path, "", rows=rows, plan_at=T0)
    try:
        d = json.loads((await s.get("/dyn/closer/httpd/?as_json=1&cca2=de"))[1])
        assert d["rsync"] == ["rsync://de1.example.org/apache/"]
        _resp, body = await s.get("/httpd/download.cgi?cca2=de")
        assert '<span class=rsync>rsync://de1.example.org/apache/</span>' in body
    finally:
        await s.close()


# --- MirrorBrain: more than one mirror per download ----------------------------------------------

@pytest_twisted.ensureDeferred
async def test_download_names_the_next_mirrors_in_link_headers(tmp_path):
    """RFC 6249 as MirrorBrain sent it: Link rel=duplicate with pri and geo for further mirrors
    of the same choice, and rel=describedby for the Metalink."""
    s = await site(tmp_path, "duplicates = 3")
    try:
        resp, _ = await s.get(f"/dyn/closer.lua?action=download&filename={TARBALL}&cca2=de")
        assert resp.code == 302
        loc = header(resp, "location")
        parts = [p.strip() for p in header(resp, "link").split(",")]
        assert len(parts) == 2            # the one other German mirror, and the Metalink
        other = (DE - {loc.removesuffix(TARBALL)}).pop()
        assert parts[0] == f"<{other}{TARBALL}>; rel=duplicate; pri=1; geo=de"
        assert parts[1] == (f"</dyn/closer.lua/{TARBALL}?action=metalink>; rel=describedby; "
                            'type="application/metalink4+xml"')
    finally:
        await s.close()
    s = await site(tmp_path / "b", "duplicates = 0")
    try:
        resp, _ = await s.get(f"/dyn/closer.lua?action=download&filename={TARBALL}&cca2=de")
        assert header(resp, "link").startswith("</dyn/closer.lua/")   # only the Metalink
    finally:
        await s.close()


@pytest_twisted.ensureDeferred
async def test_metalink_document_lists_mirrors_with_location_priority_and_hashes(tmp_path):
    """MirrorBrain's Metalink (RFC 5854): every mirror in the order of the choice, with its
    country and priority, and the size and hashes the dist tree holds; valid against the
    RFC's schema."""
    s = await site(tmp_path)
    try:
        resp, body = await s.get(f"/dyn/closer/{TARBALL}?action=metalink&cca2=de")
        assert resp.code == 200
        assert header(resp, "content-type") == "application/metalink4+xml"
        root = etree.fromstring(body.encode())
        assert SCHEMA.validate(root), SCHEMA.error_log
        f = root.find(f"{ML}file")
        assert f.get("name") == "httpd-2.4.66.tar.gz" and f.findtext(f"{ML}size") == "1234"
        assert {h.get("type"): h.text for h in f.findall(f"{ML}hash")} == {
            "sha-256": SHA256, "sha-512": SHA512}
        urls = f.findall(f"{ML}url")
        assert [int(u.get("priority")) for u in urls] == list(range(1, len(urls) + 1))
        got = [u.text.removesuffix(TARBALL) for u in urls]
        assert set(got[:2]) == DE                          # the German tier first
        assert got[-2:] in ([BACKUPS["bk1"], BACKUPS["bk2"]], [BACKUPS["bk2"], BACKUPS["bk1"]])
        assert set(got) == set(SERVING_WEB.values()) | set(BACKUPS.values())
        assert [u.get("location") for u in urls[:2]] == ["de", "de"]
        assert root.find(f"{ML}origin").text == f"{s.base}/dyn/closer/{TARBALL}?action=metalink"
        assert root.find(f"{ML}origin").get("dynamic") == "true"
        # not on the mirrors, a folder, and an origin-only file
        assert (await s.get("/dyn/closer/httpd/nope.tgz?action=metalink"))[0].code == 404
        assert (await s.get("/dyn/closer/httpd/?action=metalink"))[0].code == 400
        resp, body = await s.get("/dyn/closer/httpd/KEYS?action=metalink")
        urls = etree.fromstring(body.encode()).findall(f"{ML}file/{ML}url")
        assert [u.text for u in urls] == ["https://downloads.example.org/httpd/KEYS"]
        # a file without checksum files: no hash, still valid
        resp, body = await s.get("/dyn/closer/httpd/README?action=metalink")
        root = etree.fromstring(body.encode())
        assert SCHEMA.validate(root) and root.find(f"{ML}file/{ML}hash") is None
    finally:
        await s.close()


# --- pages found at request time ------------------------------------------------------------------

@pytest_twisted.ensureDeferred
async def test_a_project_page_added_after_start_is_served_at_once_and_a_removed_one_goes(
        tmp_path):
    """closer.cgi served any <name>.cgi beside a <name>.html; a folder created after start is
    a page at once, through the same containment as every file the web reads."""
    s = await site(tmp_path)
    try:
        assert (await s.get("/newproj/download.cgi?cca2=de"))[0].code == 404
        (s.doc / "newproj").mkdir()
        (s.doc / "newproj" / "download.html").write_text("<p>new: [preferred]</p>")
        resp, body = await s.get("/newproj/download.cgi?cca2=de")
        assert resp.code == 200 and "new: https://de" in body
        d = json.loads((await s.get("/newproj/download.cgi?as_json=1&cca2=de"))[1])
        assert d["preferred"] in DE
        (s.doc / "top.html").write_text("<p>top page</p>")     # a top-level page too
        assert "top page" in (await s.get("/top.cgi"))[1]
        assert (await s.get("/other.cgi"))[0].code == 404
        # removed: gone once the page index looks again (at most 5 s later)
        import shutil

        shutil.rmtree(s.doc / "newproj")
        pages = s.port.factory.resource.children[b"dyn"].closer
        pages.pages._found.clear()                          # as 5 s later
        assert (await s.get("/newproj/download.cgi?cca2=de"))[0].code == 404
        # containment: a link out of the document root is no page
        outside = tmp_path / "outside"
        outside.mkdir()
        (outside / "download.html").write_text("secret")
        (s.doc / "escape").symlink_to(outside)
        assert (await s.get("/escape/download.cgi"))[0].code == 404
        (s.doc / "evil.html").symlink_to(outside / "download.html")
        assert (await s.get("/evil.cgi"))[0].code == 404
        # names other parts own stay theirs
        assert (await s.get("/static/style.css"))[0].code == 200
    finally:
        await s.close()

