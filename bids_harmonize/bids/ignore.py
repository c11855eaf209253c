"""``.bidsignore``: the dataset's own list of files that BIDS tools must not index.

The BIDS validator reads it with gitignore rules; pybids does not read it at all, so the
patterns are turned into regular expressions over ``/``-rooted relative paths (what pybids'
indexer matches its ``ignore`` patterns against).
"""

from __future__ import annotations

import re
from pathlib import Path


def _glob_to_regex(glob: str) -> str:
    out, i = [], 0
    while i < len(glob):
        char = glob[i]
        if glob.startswith("**", i):
            out.append(".*")
            i += 2
            continue
        out.append({"*": "[^/]*", "?": "[^/]"}.get(char, re.escape(char)))
        i += 1
    return "".join(out)


def pattern_to_regex(pattern: str) -> re.Pattern[str] | None:
    """One gitignore-style line as a regex over '/sub-01/anat/x.nii.gz'; None for blanks and
    comments. Negation ('!') is not supported and such lines are left out."""
    pattern = pattern.strip()
    if not pattern or pattern.startswith(("#", "!")):
        return None
    directory_only = pattern.endswith("/")
    body = pattern.strip("/")
    anchored = pattern.startswith("/") or "/" in body
    prefix = "^/" if anchored else "(^|/)"
    suffix = "/" if directory_only else "(/|$)"
    return re.compile(prefix + _glob_to_regex(body) + suffix)


def read_bidsignore(bids_dir: Path) -> list[re.Pattern[str]]:
    path = Path(bids_dir) / ".bidsignore"
    if not path.is_file():
        return []
    lines = path.read_text(encoding="utf-8-sig", errors="replace").splitlines()
    return [regex for regex in map(pattern_to_regex, lines) if regex is not None]


def is_ignored(relpath: str, patterns: list[re.Pattern[str]], directory: bool = False) -> bool:
    path = "/" + relpath.strip("/") + ("/" if directory else "")
    return any(p.search(path) for p in patterns)
