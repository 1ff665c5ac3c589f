"""What a mirror serves, beyond its timestamp file: the rules of the probe's content checks (pure).

A fresh timestamp says the sync job ran; it does not say the mirror serves the files. mirmon's
users and MirrorBrain met mirrors that answer every path with 200 (a parked domain, an advert or
login page in front of an empty disk) and mirrors that serve a truncated file; php.net's checks
read real pages and the `/mirror-info` line. So the probe (probes.probe) also asks, each check
configurable in `[probes]`:

- **a random path must answer 404** (`not_found_check`): a mirror that answers 200 (or anything
  but 404 / 410) for a file that cannot exist is not a mirror of ours (`soft-404`);
- **a canary file** (`canary_path`, say the newest release tarball) whose size and SHA-256 the
  origin publishes (`Canary`, read by `Prober.load_canary`): most probes ask for one byte of it
  with a Range request and compare the total size the answer names (`canary-size`: truncated or
  grown), a share of them (`canary_full_share`) fetch it whole and compare the SHA-256
  (`canary-hash`); a mirror without it is `canary-missing`. A mirror whose last sync is older
  than the canary at the origin is not asked (it cannot have it yet);
- **php.net's `/mirror-info` line** (`timestamp_format = "phpnet"`, `mirror_info_check`):
  parsed into its fields (`MirrorInfo`), and refused (`mirror-info`) the way php.net's
  mirror-test refused it: wrong number of fields, a version that is not one, a language that
  is not a word, rsync not set up, the web server's manual alias in the way, or a site name
  that is none of the mirror's names.

These failures are probe failures like any other: they count towards `fail_after` and verdicts
(probes.verdicts) judge them the same way; each has its own error class and hint in the mails.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from urllib.parse import urlsplit

NOT_FOUND_OK = (404, 410)             # what a path that cannot exist must answer
NOT_FOUND_PREFIX = "mirrordns-no-such-file-"


def random_path(rng) -> str:
    """A file name no mirror has: new for every probe, so no cache can learn it."""
    return f"{NOT_FOUND_PREFIX}{rng.getrandbits(64):016x}"


def not_found_problem(status: int | None) -> str:
    """'' when the answer to the random path is a 404 (or 410), else what is wrong with it."""
    if status in NOT_FOUND_OK:
        return ""
    return f"a file that does not exist answered HTTP {status} (a parked or catch-all site?)"


# --- the canary ----------------------------------------------------------------------------------

@dataclass(frozen=True)
class Canary:
    """A file every mirror carries, as the origin publishes it."""
    path: str                         # below each mirror's base URL (and the origin's)
    size: int                         # bytes
    sha256: str                       # hex, lower case
    published: float | None = None    # the origin's Last-Modified (Unix seconds), when it said

    def expected_of(self, sync_time: float | None) -> bool:
        """Can a mirror that last synced at `sync_time` be expected to have it? Not before the
        origin had it: a mirror one sync behind the release is not broken."""
        return self.published is None or sync_time is None or sync_time >= self.published


_RANGE = re.compile(r"^\s*bytes\s+(?:\d+-\d+|\*)\s*/\s*(\d+)\s*$", re.IGNORECASE)


def content_range_total(value: str | None) -> int | None:
    """The complete length a `Content-Range: bytes 0-0/12345` header names (RFC 9110 14.4)."""
    m = _RANGE.match(value or "")
    return int(m.group(1)) if m else None


def size_problem(canary: Canary, size: int | None) -> str:
    if size is None:
        return "the answer does not say how large the file is"
    if size == canary.size:
        return ""
    how = "truncated" if size < canary.size else "larger than published"
    return f"{canary.path} is {size} bytes, the origin's {canary.size} ({how})"


def hash_problem(canary: Canary, digest: str) -> str:
    if digest == canary.sha256:
        return ""
    return f"{canary.path} has SHA-256 {digest[:16]}..., the origin's {canary.sha256[:16]}..."


# --- php.net's /mirror-info ----------------------------------------------------------------------

@dataclass(frozen=True)
class MirrorInfo:
    """The fields of php.net's `/mirror-info` line, `|`-separated, in their order. The first
    eight are in every version of the page; the last three came later."""
    site: str                         # the URL the mirror's web server thinks it is
    php_version: str
    last_updated: int                 # Unix time of its last sync
    search: int                       # 0 none, 1 or 2 local search
    stats: int                        # 1 with local statistics
    language: str                     # its default language
    manual_alias: str                 # "manual-noalias" when /manual is not aliased away
    rsync_ok: bool                    # the rsync settings carry what they must
    extensions: str = ""
    local_hostname: str = ""
    ipv4: str = ""


MIRROR_INFO_FIELDS = (8, 11)          # fewest and most fields


class MirrorInfoError(ValueError):
    """A `/mirror-info` line refused, with the field at fault."""

    def __init__(self, field: str, message: str):
        super().__init__(f"{field}: {message}")
        self.field = field


def parse_mirror_info(body: bytes) -> MirrorInfo:
    """The fields of a `/mirror-info` answer; MirrorInfoError names the one that is wrong."""
    line = body.decode("latin-1").strip().splitlines()
    parts = line[0].split("|") if line else []
    lo, hi = MIRROR_INFO_FIELDS
    if not lo <= len(parts) <= hi:
        raise MirrorInfoError("fields", f"{len(parts)} fields, not {lo} to {hi} "
                                        f"(site|version|updated|search|stats|language|...)")
    parts += [""] * (hi - len(parts))
    site, version, updated, search, stats, lang, alias, rsync, ext, local, ipv4 = parts
    if not re.match(r"^\d+\.\d+\.\d+", version):
        raise MirrorInfoError("version", f"{version[:40]!r} does not look like a PHP version")
    if not updated.strip().isdigit():
        raise MirrorInfoError("updated", f"{updated[:40]!r} is not a Unix time")
    for name, v in (("search", search), ("stats", stats)):
        if not v.strip().isdigit():
            raise MirrorInfoError(name, f"{v[:20]!r} is not a number")
    if not re.fullmatch(r"[A-Za-z_]+", lang):
        raise MirrorInfoError("language", f"{lang[:20]!r} is not a language code")
    return MirrorInfo(site=site, php_version=re.match(r"^\d+\.\d+\.\d+", version).group(0),
                      last_updated=int(updated), search=int(search), stats=int(stats),
                      language=lang, manual_alias=alias, rsync_ok=rsync.strip() == "1",
                      extensions=ext, local_hostname=local, ipv4=ipv4)


def mirror_info_problem(info: MirrorInfo, names) -> str:
    """'' when the parsed line describes a working mirror known by one of `names`."""
    if not info.rsync_ok:
        return "rsync: the mirror's rsync settings leave out files every mirror carries"
    if info.manual_alias == "manual-alias":
        return "manual: the web server's /manual alias hides the mirror's manual"
    host = (urlsplit(info.site).hostname or "").lower()
    if not host:
        return f"site: {info.site[:60]!r} is not a URL"
    if host not in {n.lower() for n in names}:
        return (f"site: the web server calls itself {host}, none of the mirror's names (make "
                f"the mirror's own name the ServerName, the others aliases)")
    return ""
