"""Writing the simulated dataset: BIDS raw files and the ground-truth derivative dataset."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from pathlib import Path

import nibabel as nb
import numpy as np
import SimpleITK as sitk
from numpy.typing import NDArray

from bids_harmonize import CODE_URL, __version__
from bids_harmonize.preproc.itk import itk_affine_from_ras
from bids_harmonize.simulate.anatomy import TEMPLATE_SPACE, Grid
from bids_harmonize.simulate.sites import Site
from bids_harmonize.simulate.subjects import Subject
from bids_harmonize.simulate.tissues import DSEG_LABELS, FIELD_STRENGTHS_T, TISSUES
from bids_harmonize.templates import ICBM_NOTICE
from bids_harmonize.utils import atomic_save_nifti, atomic_write_json, atomic_write_text, atomic_write_tsv

BIDS_VERSION = "1.9.0"
GENERATOR = "bids_harmonize-simulate"
TEMPLATE_DATA_NOTICE = (
    "Anatomy derived from the ICBM 2009c Nonlinear Symmetric template (T1w, T2w, brain mask) and "
    "the ICBM 2009a Nonlinear Symmetric GM/WM probability maps (as shipped by nilearn). "
    f"{ICBM_NOTICE} The 2009a maps carry the same McConnell Brain Imaging Centre notice."
)


def write_json(path: Path, content: Mapping[str, object]) -> None:
    atomic_write_json(path, dict(content))


def write_tsv(path: Path, rows: Iterable[Mapping[str, object]]) -> None:
    atomic_write_tsv(path, [dict(row) for row in rows])


def save_nifti(data: NDArray, grid: Grid, path: Path, xform_code: int) -> None:
    """Save with both qform and sform set (code 1 scanner, 4 MNI)."""
    image = nb.Nifti1Image(data, grid.affine)
    image.set_qform(grid.affine, code=xform_code)
    image.set_sform(grid.affine, code=xform_code)
    image.header.set_xyzt_units("mm", "sec")
    atomic_save_nifti(image, path)


def generated_by(description: str) -> list[dict[str, str]]:
    return [{"Name": GENERATOR, "Version": __version__, "CodeURL": CODE_URL, "Description": description}]


def write_raw_dataset_files(root: Path, seed: int, subjects: list[Subject]) -> None:
    """dataset_description.json, README and participants.tsv/json of the raw dataset."""
    write_json(
        root / "dataset_description.json",
        {
            "Name": f"bids_harmonize simulated multi-site phantom (seed {seed})",
            "BIDSVersion": BIDS_VERSION,
            "DatasetType": "raw",
            "License": "Simulated data; template-derived anatomy under the ICBM notice in README",
            "Authors": [GENERATOR],
            "HowToAcknowledge": TEMPLATE_DATA_NOTICE,
            "GeneratedBy": generated_by("Multi-site MRI phantom; ground truth in derivatives/ground_truth"),
        },
    )
    atomic_write_text(
        root / "README",
        "Simulated multi-site structural MRI made by bids_harmonize-simulate.\n\n"
        "Every subject is a deformed, aged copy of the ICBM 2009c template anatomy, scanned once at\n"
        "one simulated site (round-robin). The same anatomies rendered at every site on the template\n"
        "grid, tissue labels, brain masks, head transforms and all site parameters are in\n"
        "derivatives/ground_truth/. Institutions and serial numbers are fictional.\n\n"
        f"Template data notice:\n{TEMPLATE_DATA_NOTICE}\n",
    )
    write_tsv(
        root / "participants.tsv",
        ({"participant_id": f"sub-{s.label}", "age": s.age, "sex": s.sex} for s in subjects),
    )
    write_json(
        root / "participants.json",
        {
            "age": {
                "Description": "Simulated age; drives ventricle enlargement and GM loss",
                "Units": "year",
            },
            "sex": {
                "Description": "Simulated sex (no effect on anatomy)",
                "Levels": {"F": "female", "M": "male"},
            },
        },
    )


def raw_image_path(root: Path, subject_label: str, contrast: str) -> Path:
    return root / f"sub-{subject_label}" / "anat" / f"sub-{subject_label}_{contrast}.nii.gz"


def write_raw_image(root: Path, subject: Subject, site: Site, contrast: str, image: nb.Nifti1Image) -> Path:
    path = raw_image_path(root, subject.label, contrast)
    path.parent.mkdir(parents=True, exist_ok=True)
    atomic_save_nifti(image, path)
    write_json(path.with_name(path.name.replace(".nii.gz", ".json")), site.sidecar(contrast))
    return path


def resolution_label(resolution_mm: float) -> str:
    return f"{resolution_mm:g}".replace(".", "p")


def write_itk_transform(subject: Subject, path: Path) -> None:
    """ITK affine (LPS) mapping template points to scanner points: the transform that resamples
    the native image onto the template grid (antsApplyTransforms -r template -t this)."""
    ras = subject.pose.template_to_scanner()
    sitk.WriteTransform(itk_affine_from_ras(ras), str(path))
    write_json(
        path.with_suffix(".json"),
        {
            "Description": (
                "Rigid head position. The ITK file maps template (LPS) points to scanner (LPS) points, "
                "i.e. it resamples the native image onto the template grid. TemplateToScannerRAS is "
                "the same transform as a 4x4 matrix on RAS millimetre coordinates."
            ),
            "TemplateToScannerRAS": ras.round(8).tolist(),
            "RotationDegreesXYZ": list(subject.pose.rotation_deg),
            "TranslationMillimetres": list(subject.pose.translation_mm),
            "FieldOfViewShiftMillimetres": list(subject.pose.field_of_view_shift_mm),
        },
    )


class GroundTruthLayout:
    """Where each file of the ground-truth derivative dataset lies, and how it is written."""

    def __init__(self, root: Path, resolution_mm: float) -> None:
        self.root = root
        self.space = f"space-{TEMPLATE_SPACE}_res-{resolution_label(resolution_mm)}"

    def anat(self, subject_label: str) -> Path:
        return self.root / f"sub-{subject_label}" / "anat"

    def render_path(self, subject_label: str, site_label: str, contrast: str) -> Path:
        return self.anat(subject_label) / f"sub-{subject_label}_acq-{site_label}_{self.space}_{contrast}.nii.gz"

    def dseg_path(self, subject_label: str) -> Path:
        return self.anat(subject_label) / f"sub-{subject_label}_{self.space}_dseg.nii.gz"

    def mask_path(self, subject_label: str) -> Path:
        return self.anat(subject_label) / f"sub-{subject_label}_{self.space}_desc-brain_mask.nii.gz"

    def probseg_path(self, subject_label: str, tissue: str) -> Path:
        return self.anat(subject_label) / f"sub-{subject_label}_{self.space}_label-{tissue}_probseg.nii.gz"

    def transform_path(self, subject_label: str) -> Path:
        return self.anat(subject_label) / f"sub-{subject_label}_from-scanner_to-{TEMPLATE_SPACE}_mode-image_xfm.txt"

    def write_subject(self, subject: Subject, grid: Grid) -> None:
        """Labels, brain mask, tissue probabilities and head transform of one subject."""
        brain = subject.brain_mask
        probabilities = {name: subject.fractions[name] * brain for name in DSEG_LABELS}
        dseg = np.zeros(grid.shape, dtype=np.uint8)
        stacked = np.stack([probabilities[name] for name in DSEG_LABELS])
        dseg[brain] = np.asarray(list(DSEG_LABELS.values()), dtype=np.uint8)[stacked.argmax(axis=0)[brain]]
        save_nifti(dseg, grid, self.dseg_path(subject.label), xform_code=4)
        save_nifti(brain.astype(np.uint8), grid, self.mask_path(subject.label), xform_code=4)
        for name, probability in probabilities.items():
            save_nifti(probability.astype(np.float32), grid, self.probseg_path(subject.label, name), xform_code=4)
        write_itk_transform(subject, self.transform_path(subject.label))

    def write_render(self, subject_label: str, site_label: str, contrast: str, image: NDArray, grid: Grid) -> None:
        save_nifti(image, grid, self.render_path(subject_label, site_label, contrast), xform_code=4)

    def write_dataset_files(
        self,
        sites: list[Site],
        subjects: list[Subject],
        contrasts: tuple[str, ...],
        acquired_at: Mapping[str, str],
    ) -> None:
        write_json(
            self.root / "dataset_description.json",
            {
                "Name": "Ground truth of the bids_harmonize simulated phantom",
                "BIDSVersion": BIDS_VERSION,
                "DatasetType": "derivative",
                "License": TEMPLATE_DATA_NOTICE,
                "GeneratedBy": generated_by("Noise-free, bias-free renders of every subject at every site"),
                "SourceDatasets": [{"URL": "../../", "Description": "the simulated raw dataset"}],
            },
        )
        atomic_write_text(self.root / "README", _GROUND_TRUTH_README.format(notice=TEMPLATE_DATA_NOTICE))
        write_tsv(self.root / "dseg.tsv", ({"index": value, "name": name} for name, value in DSEG_LABELS.items()))
        write_tsv(self.root / "tissues.tsv", _tissue_rows())
        write_tsv(self.root / "sites.tsv", (site_row(site, contrasts) for site in sites))
        write_json(self.root / "sites.json", {site.label: site.to_json() for site in sites})
        write_tsv(self.root / "participants.tsv", (_subject_row(s, acquired_at[s.label]) for s in subjects))
        for site in sites:
            for contrast in contrasts:
                write_json(
                    self.root / f"acq-{site.label}_{contrast}.json",
                    {
                        "Description": f"Noise-free, bias-free render as site {site.label} images it",
                        **site.sidecar(contrast),
                    },
                )


def site_row(site: Site, contrasts: Iterable[str]) -> dict[str, object]:
    """One row of the site table: identity, artefact levels and each contrast's key parameters."""
    row: dict[str, object] = {
        "site": site.label,
        "Manufacturer": site.manufacturer,
        "ManufacturersModelName": site.model,
        "MagneticFieldStrength": site.field_strength_t,
        "DeviceSerialNumber": site.serial_number,
        "StationName": site.station_name,
        "InstitutionName": site.institution,
        "SoftwareVersions": site.software_versions,
        "noise_fraction": site.noise_fraction,
        "bias_amplitude": site.bias_amplitude,
        "white_level": site.white_level,
        "intensity_offset": site.intensity_offset,
    }
    for contrast in contrasts:
        sidecar = site.sidecar(contrast)
        row[f"{contrast}_sequence"] = sidecar["PulseSequenceType"]
        for key in ("RepetitionTime", "EchoTime", "InversionTime", "FlipAngle"):
            row[f"{contrast}_{key}"] = sidecar.get(key, "n/a")
        row[f"{contrast}_voxel_mm"] = "x".join(f"{v:g}" for v in site.protocols[contrast].voxel_size_mm)
    return row


def _tissue_rows() -> Iterable[dict[str, object]]:
    for tissue in TISSUES.values():
        row: dict[str, object] = {"tissue": tissue.name, "proton_density": tissue.proton_density}
        for field in FIELD_STRENGTHS_T:
            t1, t2 = tissue.relaxation(field)
            row[f"T1_{field:g}T_s"], row[f"T2_{field:g}T_s"] = t1, t2
        yield row


def _subject_row(subject: Subject, site_label: str) -> dict[str, object]:
    return {
        "participant_id": f"sub-{subject.label}",
        "site": site_label,
        "age": subject.age,
        "sex": subject.sex,
        "ventricle_expansion_mm": subject.ventricle_expansion_mm,
        "grey_matter_loss": subject.grey_matter_loss,
    }


_GROUND_TRUTH_README = """Ground truth of a bids_harmonize simulated multi-site dataset.

Per subject (sub-XX/anat/), on the MNI152NLin2009cSym template grid (res-<mm>):
- sub-XX_acq-<site>_space-..._<contrast>.nii.gz: the subject as <site> images it: the site's
  contrast, resolution (point-spread function) and vendor intensity scale; no noise, no bias field.
  The subject's own scan is in the raw dataset at sub-XX/anat/ (native grid, with noise and bias).
- sub-XX_space-..._dseg.nii.gz: tissue labels inside the brain mask (dseg.tsv: 1 CSF, 2 GM, 3 WM).
- sub-XX_space-..._label-<tissue>_probseg.nii.gz: tissue volume fractions inside the brain mask.
- sub-XX_space-..._desc-brain_mask.nii.gz: brain mask.
- sub-XX_from-scanner_to-MNI152NLin2009cSym_mode-image_xfm.txt (+ .json): the head position, an ITK
  transform that resamples the native image onto the template grid.
Dataset level: sites.tsv / sites.json (all site parameters), acq-<site>_<contrast>.json (sidecar
fields of each site), participants.tsv (site of acquisition, age, atrophy), tissues.tsv
(proton density, T1, T2 at 1.5 T and 3 T).

The template grid keeps each subject's own shape (only the head position is removed), as after a
perfect rigid registration.

{notice}
"""
