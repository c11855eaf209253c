"""benchmarks/downstream_factors.py: each variant takes away exactly the factor it names (on a tiny
synthetic subject; nothing segmented)."""

from __future__ import annotations

import numpy as np
import pytest
from benchmark_loader import benchmark_module

from bids_harmonize.simulate.anatomy import Grid
from bids_harmonize.simulate.render import blur_to_protocol, tissue_signal
from bids_harmonize.simulate.sites import choose_sites
from bids_harmonize.simulate.subjects import HeadPose, Subject

GRID = Grid((12, 12, 12), np.diag([2.0, 2.0, 2.0, 1.0]))


@pytest.fixture(scope="module")
def factors():
    pytest.importorskip("neuroCombat")  # downstream.py, which it builds on, imports it
    yield from benchmark_module("downstream_factors")


def tiny_subject() -> Subject:
    rng = np.random.default_rng(0)
    fractions = rng.dirichlet(np.ones(3), GRID.shape).astype(np.float32)
    return Subject(
        label="01",
        age=50,
        sex="F",
        ventricle_expansion_mm=0.0,
        grey_matter_loss=0.0,
        fractions={name: fractions[..., i] for i, name in enumerate(("CSF", "GM", "WM"))},
        brain_mask=np.ones(GRID.shape, bool),
        t1_texture=rng.normal(0, 0.1, GRID.shape).astype(np.float32),
        t2_texture=rng.normal(0, 0.1, GRID.shape).astype(np.float32),
        relaxation_scale={"CSF": (1.02, 0.99), "GM": (0.95, 1.01), "WM": (1.06, 0.97)},
        pose=HeadPose((0.0, 0.0, 0.0), (0.0, 0.0, 0.0), (0.0, 0.0, 0.0)),
    )


def thick_slice_site():
    sites = [site.at_resolution(2.0) for site in choose_sites(4, 0)]
    return next(site for site in sites if max(site.protocols["T1w"].voxel_size_mm) >= 4.0)


def test_without_blur_renders_the_sites_sequence_at_the_grids_resolution(factors):
    site, subject = thick_slice_site(), tiny_subject()
    signal = tissue_signal(subject, site, "T1w")
    sharp = factors.without_blur(site, 2.0)
    assert not np.allclose(blur_to_protocol(signal, site.protocols["T1w"], GRID), signal)
    assert np.array_equal(blur_to_protocol(signal, sharp.protocols["T1w"], GRID), signal)
    assert sharp.protocols["T1w"].sequence == site.protocols["T1w"].sequence
    assert sharp.protocols["T2w"] == site.protocols["T2w"] and sharp.noise_fraction == site.noise_fraction


def test_nominal_subjects_keep_their_anatomy_and_lose_only_their_relaxation_times(factors):
    site, subject = thick_slice_site(), tiny_subject()
    plain = factors.nominal(subject)
    assert set(plain.relaxation_scale.values()) == {(1.0, 1.0)}
    assert plain.fractions is subject.fractions and plain.t1_texture is subject.t1_texture
    assert not np.allclose(tissue_signal(plain, site, "T1w"), tissue_signal(subject, site, "T1w"))


def test_nominal_relaxation_times_change_the_target_too(factors):
    target = factors.ds.TARGET
    assert factors.changed_sites("as scanned", "site3") == set()
    assert factors.changed_sites("no noise", "site3") == {"site3"}
    assert factors.changed_sites("nominal relaxation times", "site3") == {"site3", target}
