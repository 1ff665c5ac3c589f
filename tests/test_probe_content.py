"""The probe's content checks (probes.content): what the originals caught that a timestamp does not.

Real HTTP on 127.0.0.x: fake mirrors are folders served by twisted.web.static (which answers
Range requests and a 404 for what is not there, as Apache does), a parked one answers every path,
and a fake origin publishes the canary and its `.sha256`.
"""

from __future__ import annotations

import dataclasses
import hashlib
import os
import random
import time

import pytest
import pytest_twisted
from twisted.internet import reactor
from twisted.web import resource, server, static

from dnsd.checksums import digest_of
from dnsd.config import CloserConfig, Config, ConfigError, ProbesConfig, parse_config
from probes import content
from probes.content import Canary, MirrorInfoError
from probes.probe import CanaryUnavailable, Prober, Target

NAMES = ("de1.mirrors.example.org", "de.mirrors.example.org", "www.mirrors.example.org")
CANARY = "httpd/httpd-2.4.66.tar.gz"
BLOB = bytes(random.Random(14).getrandbits(8) for _ in range(200_000))
SHA = hashlib.sha256(BLOB).hexdigest()


def cfg(origin="", **kw) -> Config:
    base = {"allow_private": True, "timeout": 3.0, "connect_timeout": 1.0, "max_body": 4096}
    base.update(kw)
    return Config(probes=ProbesConfig(**base), closer=CloserConfig(origin_url=origin))


class CatchAll(resource.Resource):
    """A parked domain: 200 and the same page for every path (and a fresh TIME, by accident)."""
    isLeaf = True

    def __init__(self):
        super().__init__()
        self.paths = []

    def render_GET(self, request):
        self.paths.append(request.path.decode())
        return f"{int(time.time())} welcome to this domain\n".encode()


class Seen(resource.Resource):
    """Wraps a resource and remembers (path, Range header) of each request."""

    def __init__(self, inner):
        super().__init__()
        self.inner, self.seen = inner, []

    def getChildWithDefault(self, name, request):
        self.seen.append((request.path.decode(), request.getHeader("range")))
        return self.inner.getChildWithDefault(name, request)


def _tree(root, *, time_at=None, canary: bytes | None = BLOB, sha: str | None = None,
          canary_mtime=None):
    pub = root / "pub"
    (pub / "httpd").mkdir(parents=True, exist_ok=True)
    (pub / "TIME").write_text(f"{int(time_at or time.time())}\n")
    if canary is not None:
        (pub / CANARY).write_bytes(canary)
        if canary_mtime is not None:
            os.utime(pub / CANARY, (canary_mtime, canary_mtime))
    if sha is not None:
        (pub / (CANARY + ".sha256")).write_text(f"{sha}  {CANARY.rsplit('/', 1)[1]}\n")
    return root


@pytest.fixture
def site():
    """serve(resource, address) -> base URL of its /pub/ folder; everything stopped after."""
    ports = []

    def serve(res, address):
        s = server.Site(res)
        s.log = lambda request: None
        port = reactor.listenTCP(0, s, interface=address)
        ports.append(port)
        return f"http://de1.example.net:{port.getHost().port}/pub/"

    yield serve
    for p in ports:
        p.stopListening()


def target(url, address, **kw):
    t = Target(mirror_id=1, hostname="de1.example.net", country="DE", name="de1", ipv4=address,
               http_url=url, names=NAMES)
    return dataclasses.replace(t, **kw)


def origin_url(url: str, address: str) -> str:
    """The same server as the origin, named by its address."""
    return url.replace("de1.example.net", address)


# --- the rules, pure -------------------------------------------------------------------------------

def test_random_paths_differ_and_only_404_or_410_passes():
    rng = random.Random(1)
    a, b = content.random_path(rng), content.random_path(rng)
    assert a != b and a.startswith(content.NOT_FOUND_PREFIX)
    assert content.not_found_problem(404) == content.not_found_problem(410) == ""
    for status in (200, 301, 302, 403, 500, None):
        assert "does not exist answered" in content.not_found_problem(status)


def test_checksum_files_as_projects_publish_them():
    hexd = "ab" * 32
    assert digest_of(f"{hexd}  httpd-2.4.66.tar.gz\n".encode(), CANARY) == hexd
    assert digest_of(f"{hexd.upper()} *httpd-2.4.66.tar.gz".encode(),
                                     CANARY) == hexd
    assert digest_of(f"SHA256 (httpd-2.4.66.tar.gz) = {hexd}\n".encode(),
                                     CANARY) == hexd
    assert digest_of(hexd.encode(), CANARY) == hexd       # the hex alone
    several = f"{'cd' * 32}  other.tar.gz\n{hexd}  httpd-2.4.66.tar.gz\n".encode()
    assert digest_of(several, CANARY) == hexd
    assert digest_of(f"{'cd' * 32}  a\n{hexd}  b\n".encode(), CANARY) is None
    assert digest_of(b"<html>not found</html>", CANARY) is None


def test_content_range_and_size_and_publication():
    assert content.content_range_total("bytes 0-0/200000") == 200000
    assert content.content_range_total("bytes */17") == 17
    assert content.content_range_total("bytes 0-0/*") is None
    assert content.content_range_total(None) is None
    c = Canary(CANARY, 100, "ab" * 32, published=1000.0)
    assert content.size_problem(c, 100) == ""
    assert "truncated" in content.size_problem(c, 99)
    assert "larger than published" in content.size_problem(c, 101)
    assert "does not say" in content.size_problem(c, None)
    assert content.hash_problem(c, "ab" * 32) == "" and content.hash_problem(c, "cd" * 32)
    assert c.expected_of(1000.0) and c.expected_of(None) and not c.expected_of(999.0)
    assert Canary(CANARY, 1, "x").expected_of(0)


MI8 = "https://de1.example.net/|5.4.17|1379510101|2|1|en|manual-noalias|1"
MI11 = MI8 + "|bz2,curl,mbstring|web3.example.net|192.0.2.7"


def test_mirror_info_fields_as_php_net_printed_them():
    i = content.parse_mirror_info(MI11.encode() + b"\n")
    assert (i.site, i.php_version, i.last_updated, i.search, i.stats, i.language) == (
        "https://de1.example.net/", "5.4.17", 1379510101, 2, 1, "en")
    assert i.rsync_ok and i.manual_alias == "manual-noalias"
    assert (i.extensions, i.local_hostname, i.ipv4) == ("bz2,curl,mbstring", "web3.example.net",
                                                        "192.0.2.7")
    old = content.parse_mirror_info(MI8.encode())           # the older eight-field page
    assert old.extensions == "" and old.rsync_ok
    assert content.mirror_info_problem(old, ["de1.example.net"]) == ""


@pytest.mark.parametrize("line, field", [
    ("https://x/|8.3.1|1700000000|1|en", "fields"),                 # php.net wanted them all
    (MI11 + "|extra", "fields"),
    ("https://x/|eight|1700000000|1|0|en|manual-noalias|1", "version"),
    ("https://x/|8.3.1|yesterday|1|0|en|manual-noalias|1", "updated"),
    ("https://x/|8.3.1|1700000000|x|0|en|manual-noalias|1", "search"),
    ("https://x/|8.3.1|1700000000|1|0|e-n;|manual-noalias|1", "language"),
])
def test_mirror_info_refused_like_php_net_did(line, field):
    with pytest.raises(MirrorInfoError) as e:
        content.parse_mirror_info(line.encode())
    assert e.value.field == field


def test_mirror_info_problems():
    names = ["de1.example.net", "de1.mirrors.example.org"]
    base = content.parse_mirror_info(MI8.encode())
    assert content.mirror_info_problem(base, names) == ""
    norsync = dataclasses.replace(base, rsync_ok=False)
    assert content.mirror_info_problem(norsync, names).startswith("rsync")
    alias = dataclasses.replace(base, manual_alias="manual-alias")
    assert content.mirror_info_problem(alias, names).startswith("manual")
    other = dataclasses.replace(base, site="http://www.example.com/")
    assert "calls itself www.example.com" in content.mirror_info_problem(other, names)


def test_config_needs_an_origin_for_the_canary():
    with pytest.raises(ConfigError, match="canary_path needs the origin"):
        parse_config('[probes]\ncanary_path = "x.tar.gz"\n')
    with pytest.raises(ConfigError, match="canary_full_share"):
        parse_config("[probes]\ncanary_full_share = 1.5\n")
    with pytest.raises(ConfigError, match="not an http or https URL"):
        parse_config('[closer]\norigin_url = "ftp://x/"\n')
    c = parse_config('[probes]\ncanary_path = "x.tar.gz"\n'
                     '[closer]\norigin_url = "https://downloads.example.org/"\n')
    assert c.probes.canary_path == "x.tar.gz"


# --- over real HTTP ----------------------------------------------------------------------------------

@pytest_twisted.ensureDeferred
async def test_parked_domain_answering_every_path_is_soft_404(site):
    """mirmon users and MirrorBrain met mirrors answering 200 for every path: a fresh-looking
    TIME is not enough."""
    parked = CatchAll()
    url = site(parked, "127.0.3.1")
    r = await Prober(cfg(), reactor).probe(target(url, "127.0.3.1"))
    assert not r.ok and r.error_class == "soft-404", r.log_lines()
    assert "answered HTTP 200" in r.error
    assert any(p.startswith("/pub/mirrordns-no-such-file-") for p in parked.paths)
    assert r.ipv4_up is True                  # the address works: the content does not
    # with the check off (a network whose mirrors cannot be set up so), it passes
    r = await Prober(cfg(not_found_check=False), reactor).probe(target(url, "127.0.3.1"))
    assert r.ok


@pytest_twisted.ensureDeferred
async def test_a_real_mirror_answers_404_for_a_missing_file(site, tmp_path):
    url = site(static.File(str(_tree(tmp_path))), "127.0.3.2")
    r = await Prober(cfg(), reactor).probe(target(url, "127.0.3.2"))
    assert r.ok, r.log_lines()
    (f,) = [f for f in r.fetches if f.check == "404"]
    assert f.status == 404 and "is not found" in f.line()


async def _canary_probe(site, tmp_path, address, mirror_blob, *, full_share=0.0, **tree):
    """Origin and mirror; the probe with the origin's canary loaded. (result, mirror's Seen)"""
    origin_dir = tmp_path / "origin"
    _tree(origin_dir, sha=SHA)
    o = site(static.File(str(origin_dir)), "127.0.3.9")
    mirror_dir = tmp_path / "mirror"
    # synced after the origin had the file (Last-Modified is rounded up to the next second)
    tree.setdefault("time_at", time.time() + 2)
    _tree(mirror_dir, canary=mirror_blob, **tree)
    seen = Seen(static.File(str(mirror_dir)))
    url = site(seen, address)
    p = Prober(cfg(origin=origin_url(o, "127.0.3.9"), canary_path=CANARY,
                   canary_full_share=full_share), reactor)
    p.canary = await p.load_canary()
    return await p.probe(target(url, address)), seen


@pytest_twisted.ensureDeferred
async def test_the_origin_publishes_the_canary(site, tmp_path):
    _tree(tmp_path, sha=SHA, canary_mtime=1_700_000_000)
    o = origin_url(site(static.File(str(tmp_path)), "127.0.3.9"), "127.0.3.9")
    p = Prober(cfg(origin=o, canary_path="/" + CANARY), reactor)
    c = await p.load_canary()
    assert c == Canary(CANARY, len(BLOB), SHA, published=1_700_000_000.0)
    (tmp_path / "pub" / (CANARY + ".sha256")).unlink()
    with pytest.raises(CanaryUnavailable, match="HTTP 404"):
        await p.load_canary()
    (tmp_path / "pub" / (CANARY + ".sha256")).write_text("no checksum here\n")
    with pytest.raises(CanaryUnavailable, match="no SHA-256"):
        await p.load_canary()


@pytest_twisted.ensureDeferred
async def test_the_origin_is_behind_the_same_refusal_of_private_addresses(site, tmp_path):
    _tree(tmp_path, sha=SHA)
    o = origin_url(site(static.File(str(tmp_path)), "127.0.3.9"), "127.0.3.9")
    p = Prober(cfg(origin=o, canary_path=CANARY, allow_private=False), reactor)
    with pytest.raises(CanaryUnavailable, match="private-address"):
        await p.load_canary()


@pytest_twisted.ensureDeferred
async def test_canary_by_range_request_passes_and_catches_a_truncated_file(site, tmp_path):
    r, seen = await _canary_probe(site, tmp_path / "a", "127.0.3.3", BLOB)
    assert r.ok, r.log_lines()
    (f,) = [f for f in r.fetches if f.check == "canary-range"]
    assert f.status == 206 and f"{len(BLOB)} bytes, as published" in f.line()
    assert (f"/pub/{CANARY}", "bytes=0-0") in seen.seen      # one byte asked, not the file

    r, _seen = await _canary_probe(site, tmp_path / "b", "127.0.3.4", BLOB[:150_000])
    assert not r.ok and r.error_class == "canary-size", r.log_lines()
    assert "150000 bytes, the origin's 200000 (truncated)" in r.error


@pytest_twisted.ensureDeferred
async def test_canary_fetched_whole_on_a_share_of_probes_catches_changed_bytes(site, tmp_path):
    """Same size, other bytes: only the SHA-256 tells, so a share of probes fetch it whole
    (here all of them); the body is hashed as it streams, far over max_body."""
    changed = bytearray(BLOB)
    changed[100_000] ^= 0xFF
    r, _seen = await _canary_probe(site, tmp_path / "a", "127.0.3.5", bytes(changed),
                                   full_share=1.0)
    assert not r.ok and r.error_class == "canary-hash", r.log_lines()
    r, seen = await _canary_probe(site, tmp_path / "b", "127.0.3.6", BLOB, full_share=1.0)
    assert r.ok, r.log_lines()
    assert (f"/pub/{CANARY}", None) in seen.seen
    (f,) = [f for f in r.fetches if f.check == "canary"]
    assert "SHA-256 as published" in f.line()
    # a range-only probe cannot see it (that is what the share is for)
    r, _seen = await _canary_probe(site, tmp_path / "c", "127.0.3.7", bytes(changed))
    assert r.ok


@pytest_twisted.ensureDeferred
async def test_a_longer_file_fetched_whole_stops_at_the_published_size(site, tmp_path):
    r, _seen = await _canary_probe(site, tmp_path, "127.0.3.8", BLOB + b"tail", full_share=1.0)
    assert r.error_class == "canary-size" and "larger than published" in r.error


@pytest_twisted.ensureDeferred
async def test_missing_canary_and_a_mirror_not_synced_since_it_was_published(site, tmp_path):
    r, _seen = await _canary_probe(site, tmp_path / "a", "127.0.3.10", None)
    assert not r.ok and r.error_class == "canary-missing" and "HTTP 404" in r.error
    # the mirror last synced an hour before the origin got the file: not expected to have it
    origin_dir = _tree(tmp_path / "o", sha=SHA, canary_mtime=time.time() - 60)
    o = origin_url(site(static.File(str(origin_dir)), "127.0.3.9"), "127.0.3.9")
    mirror = Seen(static.File(str(_tree(tmp_path / "m", canary=None,
                                        time_at=time.time() - 3600))))
    url = site(mirror, "127.0.3.11")
    p = Prober(cfg(origin=o, canary_path=CANARY), reactor)
    p.canary = await p.load_canary()
    r = await p.probe(target(url, "127.0.3.11"))
    assert r.ok, r.log_lines()
    assert not any(path.endswith(".tar.gz") for path, _rng in mirror.seen)


class MirrorInfoPage(resource.Resource):
    isLeaf = True

    def __init__(self, line):
        super().__init__()
        # one time for every fetch: the probe compares the timestamp each Host name serves, and a
        # clock read per request differs when two fetches straddle a second
        self.line = line.replace("NOW", str(int(time.time())))

    def render_GET(self, request):
        if request.path.decode() != "/pub/mirror-info":
            request.setResponseCode(404)
            return b"not found"
        return self.line.encode()


PHPNET = {"timestamp_format": "phpnet", "timestamp_path": "mirror-info"}


@pytest_twisted.ensureDeferred
async def test_php_net_mirror_info_read_for_its_fields(site):
    line = "http://de1.example.net/|8.3.1|NOW|1|0|en|manual-noalias|1|curl,mbstring|web|192.0.2.7"
    url = site(MirrorInfoPage(line), "127.0.3.12")
    r = await Prober(cfg(**PHPNET), reactor).probe(target(url, "127.0.3.12"))
    assert r.ok, r.log_lines()
    i = r.mirror_info
    assert (i.php_version, i.language, i.search, i.extensions) == ("8.3.1", "en", 1,
                                                                    "curl,mbstring")
    assert abs(r.timestamp - time.time()) < 5


@pytest_twisted.ensureDeferred
@pytest.mark.parametrize("line, words", [
    ("http://de1.example.net/|8.3.1|NOW|1|0|en|manual-noalias|0", "rsync"),
    ("http://www.example.com/|8.3.1|NOW|1|0|en|manual-noalias|1", "calls itself www.example.com"),
    ("http://de1.example.net/|8.3.1|NOW|1|0|en", "fields: 6 fields"),
])
async def test_php_net_mirror_info_failures_have_their_class(site, line, words):
    url = site(MirrorInfoPage(line), "127.0.3.13")
    r = await Prober(cfg(**PHPNET), reactor).probe(target(url, "127.0.3.13"))
    assert not r.ok and r.error_class == "mirror-info", r.log_lines()
    assert words in r.error
    assert r.timestamp is not None            # the time was read; the page is what is wrong


# --- in the loop: verdicts like any other failure ----------------------------------------------

@pytest_twisted.ensureDeferred
async def test_content_failures_disable_mirrors_through_the_verdicts(sqlite_engine, site, tmp_path):
    """The probe loop on a real table: the origin's canary read each cycle; a parked mirror
    and one with a truncated canary are taken out after fail_after probes with their class in
    the reason and its hint in the maintainer's mail; the good ones stay."""
    import sqlalchemy as sa

    import probes
    from dnsd.config import DNSConfig
    from dnsd.db import DBPool
    from dnsd.models import ACTIVE, DISABLED_PROBES, mirrors
    from tests.dns_support import until
    from tests.probe_support import add_mirror, body_of, mails

    origin = origin_url(site(static.File(str(_tree(tmp_path / "origin", sha=SHA))),
                             "127.0.4.9"), "127.0.4.9")
    later = time.time() + 2
    servers = {
        "de1": static.File(str(_tree(tmp_path / "de1", time_at=later))),
        "de2": static.File(str(_tree(tmp_path / "de2", time_at=later))),
        "de3": CatchAll(),
        "de4": static.File(str(_tree(tmp_path / "de4", time_at=later, canary=BLOB[:1000]))),
    }
    e = sqlite_engine
    with e.begin() as c:
        ids = {}
        for i, (name, res) in enumerate(servers.items(), start=1):
            address = f"127.0.4.{i}"
            url = site(res, address).replace("de1.example.net", f"{name}.example.net")
            ids[name] = add_mirror(c, name=name, ipv4=address, http_url=url,
                                   emails=(f"ops@{name}.example.net",))
    c = Config(dns=DNSConfig(zone="mirrors.example.org", min_candidates=1),
               probes=ProbesConfig(interval=1, timeout=1.0, connect_timeout=0.5, fail_after=2,
                                   pass_after=2, allow_private=True, stats_interval=3600,
                                   canary_path=CANARY, min_pass_share=0.2),
               closer=CloserConfig(origin_url=origin))
    pool = DBPool(e, reactor, 2)
    loop = probes.makeService(c, pool, reactor)

    def status(name):
        with e.connect() as conn:
            return conn.execute(sa.select(mirrors.c.status, mirrors.c.status_reason)
                                .where(mirrors.c.id == ids[name])).one()

    loop.startService()
    try:
        await until(lambda: status("de3")[0] == DISABLED_PROBES
                    and status("de4")[0] == DISABLED_PROBES, timeout=20)
    finally:
        await loop.stopService()
        pool.stop()
    assert loop.prober.canary == Canary(CANARY, len(BLOB), SHA, loop.prober.canary.published)
    assert status("de1")[0] == status("de2")[0] == ACTIVE
    assert "soft-404" in status("de3")[1]
    assert "canary-size" in status("de4")[1] and "truncated" in status("de4")[1]
    disabled = {m["recipients"]: body_of(m) for m in mails(e, "disabled")}
    (parked,) = [b for to, b in disabled.items() if "de3" in to]
    assert "parked domain" in parked and "mirrordns-no-such-file-" in parked
    (short,) = [b for to, b in disabled.items() if "de4" in to]
    assert "wrong size (truncated?)" in short


@pytest_twisted.ensureDeferred
async def test_a_backup_mirror_is_not_failed_for_its_age(site, tmp_path):
    """closer.lua never age-filtered backup mirrors; neither does the probe's `stale` (one
    rule: dnsd.serving.age_filtered), unless [dns] age_filter_backups."""
    from dnsd.config import DNSConfig

    old = time.time() - 5 * 86400
    url = site(static.File(str(_tree(tmp_path, time_at=old))), "127.0.3.14")
    r = await Prober(cfg(), reactor).probe(target(url, "127.0.3.14", backup=True))
    assert r.ok and r.sync_age > 4 * 86400, r.log_lines()
    strict = dataclasses.replace(cfg(), dns=DNSConfig(age_filter_backups=True))
    r = await Prober(strict, reactor).probe(target(url, "127.0.3.14", backup=True))
    assert r.error_class == "stale"
    r = await Prober(cfg(), reactor).probe(target(url, "127.0.3.14"))
    assert r.error_class == "stale"
