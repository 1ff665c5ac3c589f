"""Every file the web reads lies inside its configured root (project pages, templates, the dist
index, static files), however the name was spelt.

Two steps, in this order. `safe_segment` judges each name taken from a URL before any file system
call: a segment that cannot name an entry of its folder is refused, so '..', an encoded slash
(Twisted has decoded %2F into '/' by the time we see a segment), a backslash, a NUL, a control
character, a '%' left over from a double encoding, or bytes that are not UTF-8 (overlong forms
included) never reach the disk. Then `contained` resolves the path, symlinks and all, and accepts
it only inside the resolved root: a link out of the tree is as good as absent. Resolving touches
the file system, so `contained` runs where file work runs (a worker thread).
"""

from __future__ import annotations

import os
import re
from collections.abc import Sequence
from pathlib import Path

_BAD = re.compile(r"[\x00-\x1f\x7f/\\%]")
MAX_SEGMENT = 255                       # NAME_MAX on Linux


def safe_segment(s: str) -> bool:
    """A decoded URL segment that can only be a plain name in its folder (pure: no file system).

    Not empty, not '.' or '..', no leading dot (hidden files and the relative names), none of
    '/', '\\', '%', NUL or other control characters, at most 255 characters.
    """
    return (bool(s) and len(s) <= MAX_SEGMENT and not s.startswith(".")
            and not _BAD.search(s))


def contained(root: Path, parts: Sequence[str]) -> Path | None:
    """root/parts with every symlink resolved, or None when a part is not a safe segment or the
    result lies outside the resolved root. Blocking (it resolves links): not on the reactor."""
    if not all(safe_segment(p) for p in parts):
        return None
    base = Path(os.path.realpath(root))
    p = Path(os.path.realpath(base.joinpath(*parts)))
    return p if p == base or p.is_relative_to(base) else None


def inside(root: Path, path: Path) -> bool:
    """`path` (as found by a directory walk) resolves to somewhere inside `root`. Blocking."""
    base = os.path.realpath(root)
    real = os.path.realpath(path)
    return real == base or real.startswith(base.rstrip(os.sep) + os.sep)


def contained_files(folder: Path) -> list[Path]:
    """The regular files directly in `folder` that resolve inside it, sorted by name (a link to
    a file elsewhere is left out). Blocking; for start-up."""
    if not folder.is_dir():
        return []
    return [p for p in sorted(folder.iterdir())
            if safe_segment(p.name) and p.is_file() and inside(folder, p)]
