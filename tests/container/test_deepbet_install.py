"""Every setup path installs deepbet at the same pinned version and without its GUI dependency."""

from __future__ import annotations

import re
from pathlib import Path

from bids_harmonize.preproc.brainmask import DEEPBET_VERSION

ROOT = Path(__file__).resolve().parents[2]


def test_every_setup_path_pins_the_version_the_code_records():
    makefile = (ROOT / "Makefile").read_text()
    dockerfile = (ROOT / "Dockerfile").read_text()
    singularity = (ROOT / "Singularity.def").read_text()
    assert f"DEEPBET_VERSION ?= {DEEPBET_VERSION}" in makefile
    assert f"ARG DEEPBET_VERSION={DEEPBET_VERSION}" in dockerfile
    assert f'DEEPBET_VERSION="${{DEEPBET_VERSION:-{DEEPBET_VERSION}}}"' in singularity


def test_deepbet_is_installed_with_no_deps_after_the_requirements_everywhere():
    for name in ("Makefile", "Dockerfile", "Singularity.def"):
        text = (ROOT / name).read_text()
        installs = re.findall(r"pip install[^\n]*deepbet==", text)
        assert installs and all("--no-deps" in line for line in installs), name
        requirements = text.find("requirements.txt") if name != "Makefile" else text.find('".[test]"')
        assert 0 <= requirements < text.find("deepbet=="), f"{name}: deepbet must come after the package's requirements"


def test_pyproject_carries_deepbets_runtime_needs_but_not_deepbet_or_its_gui():
    pyproject = (ROOT / "pyproject.toml").read_text()
    dependencies = pyproject.split("dependencies = [", 1)[1].split("]", 1)[0]
    listed = [line.strip().strip('",') for line in dependencies.splitlines() if line.strip().startswith('"')]
    names = {re.split(r"[<>=!~\[ ]", item, maxsplit=1)[0].lower() for item in listed}
    assert {"connected-components-3d", "fill_voids", "torch", "nibabel"} <= names
    assert "deepbet" not in names and "customtkinter" not in names
