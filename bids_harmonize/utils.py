"""Small helpers shared across the package: atomic file writes and file digests.

Every file bids_harmonize writes goes to a temporary name in the same folder and is then
renamed over the destination, so a crash, a full disk or a second process writing the same
file never leaves a half-written output behind.
"""

from __future__ import annotations

import csv
import hashlib
import io
import json
import os
import socket
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any


def atomic_write(path: Path, write: Callable[[Path], None], suffix: str = "") -> Path:
    """Call ``write(tmp_path)`` and rename the result to ``path`` in one step."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    # Host and pid in the name: a later run removes the temporaries of writers that were killed
    # (runtime.py) and never those of a run still writing.
    writer = f"{socket.gethostname().split('.')[0]}-{os.getpid()}"
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.{writer}.", suffix=f".tmp{suffix}", dir=path.parent)
    os.close(fd)
    tmp_path = Path(tmp)
    try:
        write(tmp_path)
        os.chmod(tmp_path, 0o644)
        os.replace(tmp_path, path)
    except BaseException:
        tmp_path.unlink(missing_ok=True)
        raise
    return path


def atomic_write_text(path: Path, text: str) -> Path:
    return atomic_write(path, lambda tmp: tmp.write_text(text, encoding="utf-8"))


def atomic_write_json(path: Path, data: Any) -> Path:
    return atomic_write_text(path, json.dumps(data, indent=2, sort_keys=False, default=str) + "\n")


def atomic_write_tsv(path: Path, rows: list[dict[str, Any]], columns: list[str] | None = None) -> Path:
    """Tab-separated with a header row; columns default to the first row's keys."""
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=columns or list(rows[0]), delimiter="\t", lineterminator="\n")
    writer.writeheader()
    writer.writerows(rows)
    return atomic_write_text(path, buffer.getvalue())


def atomic_save_nifti(img: Any, path: Path) -> Path:
    """Save a nibabel image atomically; the temporary name keeps the .nii/.nii.gz extension."""
    path = Path(path)
    suffix = ".nii.gz" if path.name.endswith(".nii.gz") else path.suffix
    return atomic_write(path, img.to_filename, suffix=suffix)


def sha256_of(path: Path) -> str:
    """Hex SHA-256 of a file's bytes, read in 1 MiB blocks."""
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()
