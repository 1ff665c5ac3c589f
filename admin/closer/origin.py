"""What must not come from a mirror, and where it comes from instead.

Apache's release policy, and the download pages it shipped, say it outright: checksums, detached
signatures and the KEYS file are fetched from the project's own site, never from a mirror, or a
compromised mirror could hand out a bad file with a matching checksum. So `action=download` of a
name in `[closer] origin_files` (shell patterns matched against the last part of the path;
default `*.asc *.sig *.md5 *.sha1 *.sha256 *.sha512 KEYS`) goes to the origin: `[closer.origins]
<project>` for the path's first folder when set, else `[closer] origin_url`. The origin holds the
same tree as the mirrors, so the file is `<origin><path>`. Pages get the same base as `[origin]`.
"""

from __future__ import annotations

from fnmatch import fnmatchcase

from admin.closer.params import url_path


def is_origin_file(path: str, patterns) -> bool:
    name = path.rstrip("/").rsplit("/", 1)[-1]
    return bool(name) and any(fnmatchcase(name, p) for p in patterns)


def only_from_origin(closer_cfg, path: str) -> str | None:
    """None for a file the mirrors serve; for one only the origin serves, its URL there ('' when
    no origin is configured: then nobody serves it)."""
    if not is_origin_file(path, closer_cfg.origin_files):
        return None
    base = origin_for(closer_cfg, path)
    return base + url_path(path) if base else ""


def origin_for(closer_cfg, path: str) -> str:
    """The origin's base URL for `path` (ending in '/'), '' when none is configured."""
    project = path.split("/", 1)[0]
    base = closer_cfg.origins.get(project) or closer_cfg.origin_url
    return base if not base or base.endswith("/") else base + "/"
