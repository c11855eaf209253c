"""Signal equations, tissue contrast, site catalogue and subject deformations."""

import numpy as np
import pytest

from bids_harmonize.simulate import CATALOGUE, choose_sites
from bids_harmonize.simulate.anatomy import load_template_anatomy
from bids_harmonize.simulate.render import add_rician_noise, brightest_brain_signal, tissue_signal
from bids_harmonize.simulate.sequences import (
    InversionRecoveryGradientEcho,
    InversionRecoverySpinEcho,
    SpinEcho,
)
from bids_harmonize.simulate.subjects import make_subject, random_deformation
from bids_harmonize.simulate.tissues import TISSUES


def _step_by_step_mprage(sequence: InversionRecoveryGradientEcho, t1: float, cycles: int = 30) -> float:
    """Longitudinal magnetisation followed event by event until the periodic steady state."""
    alpha = np.deg2rad(sequence.flip_angle_deg)
    n, spacing = sequence.excitations_per_inversion, sequence.echo_spacing_s
    before_train = sequence.inversion_time_s - n / 2 * spacing
    after_train = sequence.cycle_time_s - before_train - n * spacing

    def relax(m: float, duration: float) -> float:
        return 1 - (1 - m) * np.exp(-duration / t1)

    m, centre = 1.0, 0.0
    for _ in range(cycles):
        m = relax(-m, before_train)
        for pulse in range(n):
            if pulse == n // 2:
                centre = m
            m = relax(m * np.cos(alpha), spacing)
        m = relax(m, after_train)
    return abs(centre) * np.sin(alpha)


@pytest.mark.parametrize("t1", [0.3, 0.9, 1.8, 4.3])
def test_mprage_closed_form_matches_step_by_step_simulation(t1: float) -> None:
    sequence = InversionRecoveryGradientEcho("MPRAGE", 0.9, 0.003, 9.0, 0.0071, 2.3, 176)
    closed_form = float(sequence.signal(t1, 1e9))
    assert closed_form == pytest.approx(_step_by_step_mprage(sequence, t1), rel=1e-6)


def test_spin_echo_limits() -> None:
    long_tr = SpinEcho("SE", repetition_time_s=100.0, echo_time_s=0.1)
    assert float(long_tr.signal(1.0, 0.1)) == pytest.approx(np.exp(-1.0))
    # Inversion recovery nulls a tissue at TI = T1 ln 2 when TR is long.
    nulling = InversionRecoverySpinEcho("IR", repetition_time_s=100.0, echo_time_s=0.01, inversion_time_s=np.log(2))
    assert float(nulling.signal(1.0, 0.1)) == pytest.approx(0.0, abs=1e-9)


@pytest.mark.parametrize("site", CATALOGUE, ids=lambda s: s.label)
def test_every_catalogue_site_has_textbook_contrast(site) -> None:
    """T1w: WM > GM > CSF. T2w: CSF > GM > WM. Both at the site's field strength."""
    for contrast, order in (("T1w", ("WM", "GM", "CSF")), ("T2w", ("CSF", "GM", "WM"))):
        sequence = site.protocols[contrast].sequence
        signal = {
            name: TISSUES[name].proton_density
            * float(sequence.signal(*TISSUES[name].relaxation(site.field_strength_t)))
            for name in order
        }
        assert signal[order[0]] > signal[order[1]] > signal[order[2]], (site.label, contrast, signal)
        assert brightest_brain_signal(site, contrast) == pytest.approx(signal[order[0]])


def test_sites_beyond_the_catalogue_are_new_units_of_known_models() -> None:
    sites = choose_sites(8, seed=1)
    assert [s.label for s in sites] == [f"site{i}" for i in range(1, 9)]
    assert len({s.serial_number for s in sites}) == 8
    assert sites[6].model == CATALOGUE[0].model and sites[6].serial_number != CATALOGUE[0].serial_number
    assert choose_sites(8, seed=1) == sites


def test_rician_noise_has_the_rayleigh_floor() -> None:
    rng = np.random.default_rng(0)
    background = add_rician_noise(np.zeros(200_000), sigma=2.0, rng=rng)
    assert background.min() >= 0
    assert background.mean() == pytest.approx(2.0 * np.sqrt(np.pi / 2), rel=0.02)


@pytest.fixture(scope="module")
def coarse_template():
    return load_template_anatomy(4.0)


def test_random_deformation_is_diffeomorphic(coarse_template) -> None:
    displacement = random_deformation(coarse_template, ventricle_expansion_mm=4.0, rng=np.random.default_rng(0))
    jacobian = np.stack([np.stack(np.gradient(d)) for d in displacement]) + np.eye(3)[:, :, None, None, None]
    determinant = np.linalg.det(np.moveaxis(jacobian, (0, 1), (-2, -1)))
    assert determinant.min() > 0
    assert np.abs(displacement).max() > 0.5  # it does move things


def test_ventricle_expansion_enlarges_ventricles(coarse_template) -> None:
    ventricles = coarse_template.ventricles
    csf = coarse_template.fractions["CSF"]
    from scipy import ndimage

    region = ndimage.binary_dilation(ventricles, iterations=2)
    volumes = []
    for expansion in (0.0, 6.0):
        displacement = random_deformation(coarse_template, expansion, np.random.default_rng(5))
        points = np.indices(csf.shape, dtype=np.float32) + displacement
        volumes.append(ndimage.map_coordinates(csf, points, order=1)[region].sum())
    assert volumes[1] > 1.1 * volumes[0]


def test_subjects_differ_and_signal_follows_tissue(coarse_template) -> None:
    first = make_subject(coarse_template, "01", np.random.default_rng(1))
    second = make_subject(coarse_template, "02", np.random.default_rng(2))
    assert not np.allclose(first.fractions["GM"], second.fractions["GM"])
    signal = tissue_signal(first, CATALOGUE[0], "T1w")
    white = first.fractions["WM"] > 0.9
    grey = first.fractions["GM"] > 0.7
    assert np.median(signal[white]) > 1.3 * np.median(signal[grey])
