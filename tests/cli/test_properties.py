"""Property-based tests (hypothesis) over model cards and over image headers and values.

Whatever is drawn: no exception other than the documented ones (so no traceback on the
console), an exit code from the documented set, every written image finite and (harmonized)
within the output range, and the raw inputs unchanged. Example counts are modest so the fast
tier stays fast; the end-to-end property (marked slow) runs a few whole participant runs.
"""

from __future__ import annotations

import copy
import json
import shutil
import tempfile
from pathlib import Path

import nibabel as nb
import numpy as np
import pytest
from hypothesis import HealthCheck, event, given, settings, strategies as st

from bids_harmonize.bids import invariant
from bids_harmonize.bids.screen import image_problem, read_header_geometry
from helpers import Scan, head_phantom, make_bids, write_bundle

EXIT_CODES = {0, 1, 16, 18, 64, 66}  # README: the documented set
CARD_EXAMPLES, IMAGE_EXAMPLES, RUN_EXAMPLES = 100, 150, 4
COMMON = dict(deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])

# ----------------------------------------------------------------------------- model cards
ODD_NUMBERS = st.one_of(
    st.floats(allow_nan=True, allow_infinity=True),
    st.sampled_from([0.0, -0.0, 1e300, -1e300, 1e30, 1e-30, 999.0, 1000.5]),
    st.integers(-(2**70), 2**70),
)
ODD_VALUES = st.one_of(
    ODD_NUMBERS,
    st.none(),
    st.booleans(),
    st.text(max_size=5),
    st.lists(ODD_NUMBERS, max_size=3),
    st.dictionaries(st.text(max_size=3), ODD_NUMBERS, max_size=2),
)


def _leaves(value, path=()):
    """Every (path, value) of a JSON document, containers included."""
    yield path, value
    if isinstance(value, dict):
        for key, item in value.items():
            yield from _leaves(item, (*path, key))
    elif isinstance(value, list):
        for index, item in enumerate(value):
            yield from _leaves(item, (*path, index))


def _replace(document, path, value):
    target = document
    for key in path[:-1]:
        target = target[key]
    target[path[-1]] = value


@pytest.fixture(scope="module")
def bundle_template(tmp_path_factory) -> Path:
    return write_bundle(tmp_path_factory.mktemp("card") / "m")


@settings(max_examples=CARD_EXAMPLES, **COMMON)
@given(data=st.data())
def test_any_card_loads_within_bounds_or_is_refused_as_an_unusable_bundle(bundle_template, data):
    from bids_harmonize.model import BundleError, load_bundle
    from bids_harmonize.model.card import MAX_STYLE_NORM

    card = json.loads((bundle_template / "model.json").read_text())
    paths = [p for p, _ in _leaves(card) if p]
    edited = copy.deepcopy(card)
    for path in data.draw(st.lists(st.sampled_from(paths), min_size=1, max_size=3)):
        try:
            _replace(edited, path, data.draw(ODD_VALUES))
        except (KeyError, IndexError, TypeError):  # an earlier edit replaced a parent
            pass
    with tempfile.TemporaryDirectory() as folder:
        bundle = Path(folder) / "m"
        shutil.copytree(bundle_template, bundle)
        (bundle / "model.json").write_text(json.dumps(edited))
        try:
            loaded = load_bundle(bundle)
        except BundleError as error:
            assert str(bundle / "model.json") in str(error) or "model.safetensors" in str(error)
            event("refused (exit 66)")
            return
    event("loaded")
    for site in loaded.card["sites"]:
        assert np.linalg.norm(site["style"]) <= MAX_STYLE_NORM
        scale = (site["signature"] or {}).get("intensity_scale")
        if scale:
            bounds = invariant.OutputRange.for_target(scale["lo"], scale["hi"])
            assert np.isfinite([bounds.lo, bounds.hi]).all() and bounds.lo < bounds.hi


# ----------------------------------------------------------------------------- images
DTYPES = [np.uint8, np.int16, np.int32, np.float32, np.float64]


@st.composite
def images(draw, min_side: int = 1, max_side: int = 24):
    shape = tuple(draw(st.lists(st.integers(min_side, max_side), min_size=3, max_size=3)))
    if draw(st.booleans()) and draw(st.booleans()):
        shape = (*shape, draw(st.integers(1, 3)))
    dtype = draw(st.sampled_from(DTYPES))
    kind = draw(st.sampled_from(["head", "noise", "constant", "one voxel", "extreme", "nan", "inf"]))
    data = _values(kind, shape, np.dtype(dtype), draw(st.integers(0, 2**16)))
    # Half the draws have a head-sized field of view, so the later checks are reached too.
    zooms = draw(
        st.one_of(
            st.lists(st.floats(0.05, 12.0), min_size=3, max_size=3),
            st.lists(
                st.floats(100.0 / min(shape[:3]), 12.0) if min(shape[:3]) >= 16 else st.just(8.0),
                min_size=3,
                max_size=3,
            ),
        )
    )
    affine = np.diag([*zooms, 1.0])
    affine[:3, 3] = draw(st.lists(st.floats(-1e4, 1e4), min_size=3, max_size=3))
    if draw(st.booleans()):  # oblique, sheared or degenerate
        affine[:3, :3] += np.asarray(draw(st.lists(st.floats(-5.0, 5.0), min_size=9, max_size=9))).reshape(3, 3)
    return data, affine


def _values(kind: str, shape: tuple[int, ...], dtype: np.dtype, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    spatial = shape[:3]
    if kind == "head":
        data = head_phantom(spatial, seed).astype(np.float64)
    elif kind == "noise":
        data = rng.random(spatial) * 1000
    elif kind == "constant":
        data = np.full(spatial, 7.0)
    elif kind == "one voxel":
        data = np.zeros(spatial)
        data[tuple(s // 2 for s in spatial)] = 100.0
    else:
        data = head_phantom(spatial, seed).astype(np.float64)
        chosen = rng.random(spatial) < 0.05
        if kind == "extreme":
            info = np.finfo(dtype) if dtype.kind == "f" else np.iinfo(dtype)
            data[chosen] = info.max
        elif dtype.kind == "f":
            data[chosen] = np.nan if kind == "nan" else np.inf
    if dtype.kind != "f":
        info = np.iinfo(dtype)
        data = np.clip(np.nan_to_num(data), info.min, info.max)
    data = data.astype(dtype)
    return np.broadcast_to(data[..., None], shape).copy() if len(shape) > 3 else data


@settings(max_examples=IMAGE_EXAMPLES, **COMMON)
@given(image=st.one_of(images(), images(min_side=16, max_side=40)))
def test_screening_answers_every_image_with_a_reason_or_none(image):
    data, affine = image
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "sub-01_T1w.nii.gz"
        nb.Nifti1Image(data, affine).to_filename(path)
        before = path.read_bytes()
        try:
            read_header_geometry(path)
        except ValueError:
            pass
        problem = image_problem(path)
        assert problem is None or "Fix:" in problem
        event("usable" if problem is None else problem.split(" (")[0].split(";")[0][:40])
        assert path.read_bytes() == before


# ----------------------------------------------------------------------------- whole runs
@pytest.mark.slow
@settings(max_examples=RUN_EXAMPLES, **COMMON)
@given(image=images(min_side=26, max_side=36), harmonize=st.booleans())
def test_a_participant_run_on_any_image_ends_cleanly(tmp_path_factory, capfd, image, harmonize):
    """One drawn image (with 4-5 mm voxels, so that some pass screening) among a normal one."""
    from bids_harmonize.cli.run import main

    data, affine = image
    root = tmp_path_factory.mktemp("run")
    voxel = (4.0, 4.0, 5.0)
    bids = make_bids(root / "bids", [Scan("01", "ge", voxel=voxel), Scan("02", "ge", voxel=voxel)], shape=(32, 32, 32))
    affine[:3, :3] = np.diag(voxel) if np.linalg.matrix_rank(affine[:3, :3]) < 3 else affine[:3, :3]
    nb.Nifti1Image(data, affine).to_filename(bids / "sub-02/anat/sub-02_T1w.nii.gz")
    raw = {p: p.read_bytes() for p in bids.rglob("*") if p.is_file()}
    extra = []
    if harmonize:
        (root / "sites.tsv").write_text("participant_id\tsite\nsub-01\tA\nsub-02\tB\n")
        extra = ["--model", str(write_bundle(root / "m")), "--site-table", str(root / "sites.tsv")]
    out = root / "out"
    code = main([str(bids), str(out), "participant", "--nprocs", "1", "--omp-nthreads", "1", *extra])
    console = capfd.readouterr()
    assert code in EXIT_CODES
    assert "Traceback" not in console.err + console.out
    assert {p: p.read_bytes() for p in bids.rglob("*") if p.is_file()} == raw
    for written in out.glob("sub-*/anat/*.nii.gz"):
        values = np.asanyarray(nb.load(written).dataobj)
        assert np.isfinite(values).all(), written
        sidecar = (
            json.loads(Path(str(written).replace(".nii.gz", ".json")).read_text())
            if "harmonized" in written.name
            else {}
        )
        if "OutputRange" in sidecar:
            assert sidecar["OutputRange"]["Min"] <= values.min() and values.max() <= sidecar["OutputRange"]["Max"]
