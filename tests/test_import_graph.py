"""The package's imports point down the declared layers and form no circle (docs/architecture.md)."""

from __future__ import annotations

import subprocess
import sys
import textwrap
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SCRIPT = ROOT / "scripts" / "import_graph.py"


def _run(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, str(SCRIPT), *args], capture_output=True, text=True, timeout=60)


def test_the_package_imports_point_down_and_form_no_cycle():
    done = _run()
    assert done.returncode == 0, done.stdout + done.stderr
    assert "upward imports: 0" in done.stdout and "cycles: 0" in done.stdout


def _package(tmp_path: Path, files: dict[str, str]) -> Path:
    package = tmp_path / "bids_harmonize"
    for name, text in files.items():
        path = package / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(textwrap.dedent(text))
    return package


def test_an_upward_import_a_cycle_and_an_undeclared_unit_are_caught(tmp_path):
    package = _package(
        tmp_path,
        {
            "__init__.py": "",
            "bids/__init__.py": "",
            "bids/a.py": "def f():\n    from bids_harmonize.workflows import b\n",  # lazy, still upward
            "workflows/__init__.py": "",
            "workflows/b.py": "from ..bids import a\n",  # relative import
        },
    )
    done = _run("--package-dir", str(package))
    assert done.returncode == 1
    assert "bids -> workflows: bids_harmonize.bids.a:2" in done.stdout
    assert "{bids, workflows}" in done.stdout
    (package / "extras").mkdir()
    (package / "extras" / "__init__.py").write_text("")
    assert _run("--package-dir", str(package)).returncode == 2
