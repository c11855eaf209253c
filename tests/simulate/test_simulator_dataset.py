"""The simulated dataset on disk: determinism, BIDS validity, sidecars, native grids, ground truth."""

from pathlib import Path

import bids
import nibabel as nb
import numpy as np
import SimpleITK as sitk

from bids_harmonize.simulate import SimulatedDataset, simulate_dataset
from bids_harmonize.simulate.anatomy import template_grid
from bids_harmonize.simulate.sequences import InversionRecoveryGradientEcho

IDENTITY_FIELDS = {
    "Manufacturer": "manufacturer",
    "ManufacturersModelName": "model",
    "MagneticFieldStrength": "field_strength_t",
    "DeviceSerialNumber": "serial_number",
    "StationName": "station_name",
    "InstitutionName": "institution",
    "SoftwareVersions": "software_versions",
}


def _nifti_arrays(root: Path) -> dict[str, np.ndarray]:
    return {str(p.relative_to(root)): np.asarray(nb.load(p).dataobj) for p in sorted(root.rglob("*.nii.gz"))}


def test_same_seed_gives_identical_arrays(tiny_dataset: SimulatedDataset, tiny_dataset_again: SimulatedDataset) -> None:
    first, second = _nifti_arrays(tiny_dataset.bids_root), _nifti_arrays(tiny_dataset_again.bids_root)
    assert first.keys() == second.keys() and len(first) > 10
    for name in first:
        assert first[name].dtype == second[name].dtype
        assert np.array_equal(first[name], second[name]), name


def test_another_seed_gives_other_images(tiny_dataset: SimulatedDataset, tmp_path: Path) -> None:
    other = simulate_dataset(tmp_path / "other", n_sites=2, n_subjects=1, resolution_mm=4.0, seed=4)
    ours = np.asarray(nb.load(tiny_dataset.native_image("01")).dataobj)
    theirs = np.asarray(nb.load(other.native_image("01")).dataobj)
    assert ours.shape != theirs.shape or not np.array_equal(ours, theirs)


def test_pybids_indexes_raw_and_ground_truth(tiny_dataset: SimulatedDataset) -> None:
    layout = bids.BIDSLayout(tiny_dataset.bids_root, derivatives=True)
    assert layout.get_subjects() == ["01", "02", "03"]
    assert len(layout.get(suffix="T1w", extension=".nii.gz", scope="raw")) == 3
    assert len(layout.get(suffix="T2w", extension=".nii.gz", scope="raw")) == 3
    truth = layout.derivatives.get_pipeline("bids_harmonize-simulate")
    renders = truth.get(suffix="T1w", extension=".nii.gz")
    assert {r.entities["acquisition"] for r in renders} == {"site1", "site2"}
    assert len(renders) == 3 * 2
    assert len(truth.get(suffix="dseg", extension=".nii.gz")) == 3


def test_subjects_go_round_robin_over_sites(tiny_dataset: SimulatedDataset) -> None:
    assert tiny_dataset.site_of_subject == {"01": "site1", "02": "site2", "03": "site1"}


def test_sidecars_match_the_simulated_site(tiny_dataset: SimulatedDataset) -> None:
    layout = bids.BIDSLayout(tiny_dataset.bids_root)
    for subject, site_label in tiny_dataset.site_of_subject.items():
        site = tiny_dataset.site(site_label)
        for contrast in ("T1w", "T2w"):
            image = layout.get(subject=subject, suffix=contrast, extension=".nii.gz")[0]
            metadata = image.get_metadata()
            for key, attribute in IDENTITY_FIELDS.items():
                assert metadata[key] == getattr(site, attribute), key
            sequence = site.protocols[contrast].sequence
            assert metadata["EchoTime"] == sequence.echo_time_s
            assert metadata.get("InversionTime") == getattr(sequence, "inversion_time_s", None)
            if isinstance(sequence, InversionRecoveryGradientEcho):
                assert metadata["FlipAngle"] == sequence.flip_angle_deg
                reported = sequence.cycle_time_s if site.manufacturer == "SIEMENS" else sequence.echo_spacing_s
                assert metadata["RepetitionTime"] == reported
            else:
                assert metadata["RepetitionTime"] == sequence.repetition_time_s
            zooms = nb.load(image.path).header.get_zooms()
            assert metadata["SliceThickness"] == max(zooms)


def test_native_images_are_not_on_the_template_grid(tiny_dataset: SimulatedDataset) -> None:
    grid = template_grid(tiny_dataset.resolution_mm)
    for subject, site_label in tiny_dataset.site_of_subject.items():
        image = nb.load(tiny_dataset.native_image(subject))
        assert image.shape != grid.shape
        assert not np.allclose(image.affine, grid.affine)
        protocol = tiny_dataset.site(site_label).protocols["T1w"]
        assert "".join(nb.aff2axcodes(image.affine)) == protocol.orientation
        assert image.get_data_dtype() == np.int16
        assert 0 <= np.asarray(image.dataobj).min() and np.asarray(image.dataobj).max() <= 4095


def _correlation_after_resampling(
    native: sitk.Image, render: sitk.Image, mask: np.ndarray, transform: sitk.Transform
) -> float:
    moved = sitk.GetArrayFromImage(sitk.Resample(native, render, transform, sitk.sitkLinear, 0.0))
    return float(np.corrcoef(moved[mask], sitk.GetArrayFromImage(render)[mask])[0, 1])


def test_ground_truth_transform_brings_the_native_scan_onto_its_render(
    tiny_dataset: SimulatedDataset,
) -> None:
    """Resampling the noisy native scan with the stored ITK transform must reproduce the
    noise-free render of the same site far better than ignoring the head position."""
    truth = tiny_dataset.ground_truth
    for subject, site in tiny_dataset.site_of_subject.items():
        render = sitk.ReadImage(str(truth.render_path(subject, site, "T1w")))
        native = sitk.ReadImage(str(tiny_dataset.native_image(subject)), sitk.sitkFloat32)
        transform = sitk.ReadTransform(str(truth.transform_path(subject)))
        mask = sitk.GetArrayFromImage(sitk.ReadImage(str(truth.mask_path(subject)))) > 0
        aligned = _correlation_after_resampling(native, render, mask, transform)
        assert aligned > 0.9
        assert aligned > _correlation_after_resampling(native, render, mask, sitk.Transform()) + 0.1


def test_ground_truth_labels_and_mask_agree(tiny_dataset: SimulatedDataset) -> None:
    truth = tiny_dataset.ground_truth
    for subject in tiny_dataset.subjects:
        labels = np.asarray(nb.load(truth.dseg_path(subject)).dataobj)
        mask = np.asarray(nb.load(truth.mask_path(subject)).dataobj) > 0
        assert set(np.unique(labels)) == {0, 1, 2, 3}
        assert np.array_equal(labels > 0, mask)
        assert (labels == 2).sum() > (labels == 1).sum()  # more GM than (plurality) CSF


def test_renders_differ_between_sites_but_share_the_anatomy(tiny_dataset: SimulatedDataset) -> None:
    truth = tiny_dataset.ground_truth
    mask = np.asarray(nb.load(truth.mask_path("01")).dataobj) > 0
    site1, site2 = (np.asarray(nb.load(truth.render_path("01", s, "T1w")).dataobj)[mask] for s in ("site1", "site2"))
    assert not np.allclose(site1, site2, rtol=0.05)
    assert np.corrcoef(site1, site2)[0, 1] > 0.8


def test_ground_truth_dataset_describes_itself(tiny_dataset: SimulatedDataset) -> None:
    root = tiny_dataset.ground_truth_root
    description = (root / "dataset_description.json").read_text()
    assert '"DatasetType": "derivative"' in description and "McConnell" in description
    assert "McConnell" in (tiny_dataset.bids_root / "README").read_text()
    sites_table = (root / "sites.tsv").read_text().splitlines()
    assert len(sites_table) == 1 + 2 and sites_table[0].startswith("site\tManufacturer")
    assert [row["site"] for row in tiny_dataset.site_table()] == ["site1", "site2"]
    assert tiny_dataset.site_table()[0]["T1w_InversionTime"] == 0.9
    assert "site" in (root / "participants.tsv").read_text().splitlines()[0]


def test_native_truth_lies_on_the_scan_grid_in_the_target_sites_contrast(tiny_dataset: SimulatedDataset) -> None:
    subject = tiny_dataset.subjects[0]
    own, other = (
        tiny_dataset.site_of_subject[subject],
        next(s.label for s in tiny_dataset.sites if s.label != tiny_dataset.site_of_subject[subject]),
    )
    raw = nb.load(tiny_dataset.native_image(subject))
    own_truth, mask = tiny_dataset.native_truth(subject, own)
    other_truth, _ = tiny_dataset.native_truth(subject, other)
    assert own_truth.shape == raw.shape and np.allclose(own_truth.affine, raw.affine)
    inside = np.asarray(mask.dataobj) > 0
    assert inside.sum() > 50
    scan, own_values, other_values = (
        np.asarray(img.dataobj, np.float64)[inside] for img in (raw, own_truth, other_truth)
    )
    # Its own site's render is the scan without noise and bias: nearly perfectly correlated.
    assert np.corrcoef(scan, own_values)[0, 1] > 0.9
    # The other site renders the same anatomy in another contrast and scale.
    assert not np.allclose(own_values, other_values, rtol=0.05)
