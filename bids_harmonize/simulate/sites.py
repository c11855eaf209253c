"""Simulated scanners: identity (as DICOM/BIDS sidecars spell it), protocols and artefact levels.

The six catalogue sites are modelled on common research and clinical protocols (ADNI-like
MPRAGE/IR-FSPGR/TFE, a clinical 2D T1 IR-TSE); institutions and serial numbers are fictional.
Vendor spellings follow what dcm2niix writes from real headers, including an old-style "Siemens"
next to "SIEMENS", so that site inference meets the variation it meets in the wild.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from dataclasses import dataclass

import numpy as np

from bids_harmonize.simulate.sequences import (
    InversionRecoveryGradientEcho,
    InversionRecoverySpinEcho,
    Sequence,
    SpinEcho,
)

GYROMAGNETIC_RATIO_MHZ_PER_T = 42.577478


@dataclass(frozen=True)
class Protocol:
    """How one contrast is acquired at a site.

    Sizes are along the scanner's R, A, S axes; the largest voxel size is the slice thickness.
    `orientation` is the axis-code string of the stored array (nibabel convention, e.g. "PSR"
    for a sagittal acquisition as dcm2niix writes it).
    """

    contrast: str
    sequence: Sequence
    voxel_size_mm: tuple[float, float, float]
    field_of_view_mm: tuple[float, float, float]
    orientation: str
    series_description: str

    def at_resolution(self, resolution_mm: float) -> Protocol:
        """This protocol on a simulation grid of `resolution_mm`: no voxel finer than the grid."""
        coarsened = tuple(max(size, resolution_mm) for size in self.voxel_size_mm)
        return dataclasses.replace(self, voxel_size_mm=coarsened)


@dataclass(frozen=True)
class Site:
    """One scanner with its protocols, artefact levels and vendor intensity scaling.

    `noise_fraction` is the Rician noise sigma relative to the brightest pure brain tissue,
    `bias_amplitude` the largest |log gain| of the receive-bias field, and stored intensities are
    `white_level * signal / brightest-brain-tissue signal + intensity_offset` in a 12-bit range.
    """

    label: str
    manufacturer: str
    model: str
    field_strength_t: float
    serial_number: str
    station_name: str
    institution: str
    software_versions: str
    receive_coil: str
    protocols: Mapping[str, Protocol]
    noise_fraction: float
    bias_amplitude: float
    white_level: float
    intensity_offset: float = 0.0

    @property
    def reports_preparation_tr(self) -> bool:
        """Siemens writes the inversion cycle as RepetitionTime; GE and Philips the echo spacing."""
        return self.manufacturer.upper().startswith("SIEMENS")

    def at_resolution(self, resolution_mm: float) -> Site:
        protocols = {name: p.at_resolution(resolution_mm) for name, p in self.protocols.items()}
        return dataclasses.replace(self, protocols=protocols)

    def sidecar(self, contrast: str) -> dict[str, object]:
        """The BIDS JSON sidecar of an image of `contrast` acquired here."""
        protocol = self.protocols[contrast]
        return {
            "Modality": "MR",
            "Manufacturer": self.manufacturer,
            "ManufacturersModelName": self.model,
            "MagneticFieldStrength": self.field_strength_t,
            "ImagingFrequency": round(GYROMAGNETIC_RATIO_MHZ_PER_T * self.field_strength_t, 6),
            "DeviceSerialNumber": self.serial_number,
            "StationName": self.station_name,
            "InstitutionName": self.institution,
            "SoftwareVersions": self.software_versions,
            "ReceiveCoilName": self.receive_coil,
            "BodyPart": "BRAIN",
            "PatientPosition": "HFS",
            "SeriesDescription": protocol.series_description,
            "ProtocolName": protocol.series_description,
            **protocol.sequence.sidecar_fields(self.reports_preparation_tr),
            "SliceThickness": max(protocol.voxel_size_mm),
        }

    def to_json(self) -> dict[str, object]:
        """All parameters, with each sequence tagged by its model class."""
        record = dataclasses.asdict(self)
        for contrast, protocol in self.protocols.items():
            record["protocols"][contrast]["sequence"]["model"] = type(protocol.sequence).__name__
        return record


def _t2w_tse(tr: float, te: float, voxel: tuple[float, float, float], orientation: str) -> Protocol:
    return Protocol("T2w", SpinEcho("TSE", tr, te), voxel, (230.0, 230.0, 150.0), orientation, "t2_tse_tra")


CATALOGUE: tuple[Site, ...] = (
    Site(
        "site1",
        "SIEMENS",
        "Prisma_fit",
        3.0,
        "166038",
        "AWP166038",
        "Northbrook University Hospital",
        "syngo MR XA30",
        "HeadNeck_64",
        {
            "T1w": Protocol(
                "T1w",
                InversionRecoveryGradientEcho("MPRAGE", 0.9, 0.00298, 9.0, 0.0071, 2.3, 176),
                (1.0, 1.0, 1.0),
                (176.0, 256.0, 256.0),
                "PSR",
                "t1_mprage_sag_p2_iso",
            ),
            "T2w": _t2w_tse(6.0, 0.093, (0.9, 0.9, 3.0), "LAS"),
        },
        noise_fraction=0.02,
        bias_amplitude=0.30,
        white_level=1000.0,
    ),
    Site(
        "site2",
        "GE MEDICAL SYSTEMS",
        "DISCOVERY MR750",
        3.0,
        "000000608765MR3",
        "GEMR750RIC",
        "Riverside Imaging Centre",
        "27\\LX\\MR Software release:DV26.0_R03_1831.b",
        "32Ch Head",
        {
            "T1w": Protocol(
                "T1w",
                InversionRecoveryGradientEcho("IR-FSPGR", 0.65, 0.0032, 12.0, 0.0082, 2.0, 96),
                (1.0, 1.0, 1.2),
                (256.0, 256.0, 200.0),
                "LAS",
                "Ax IR-FSPGR BRAVO",
            ),
            "T2w": _t2w_tse(4.0, 0.085, (1.0, 1.0, 3.0), "LAS"),
        },
        noise_fraction=0.025,
        bias_amplitude=0.25,
        white_level=2200.0,
        intensity_offset=30.0,
    ),
    Site(
        "site3",
        "Philips Medical Systems",
        "Ingenia",
        1.5,
        "42105",
        "PHILIPS-ING15",
        "Lakeside General Hospital",
        "5.4.1\\5.4.1.0",
        "dS HeadNeckSpine",
        {
            "T1w": Protocol(
                "T1w",
                InversionRecoverySpinEcho("IR-TSE", 2.0, 0.015, 0.75),
                (0.9, 0.9, 4.0),
                (230.0, 230.0, 160.0),
                "RAS",
                "T1W_IR_TSE_TRA",
            ),
            "T2w": _t2w_tse(5.0, 0.1, (0.9, 0.9, 5.0), "RAS"),
        },
        noise_fraction=0.035,
        bias_amplitude=0.15,
        white_level=3200.0,
    ),
    Site(
        "site4",
        "Siemens",
        "Avanto",
        1.5,
        "26473",
        "MRC26473",
        "Hillcrest Memory Clinic",
        "syngo MR B17",
        "HeadMatrix",
        {
            "T1w": Protocol(
                "T1w",
                InversionRecoveryGradientEcho("MPRAGE", 1.0, 0.0036, 8.0, 0.0087, 2.4, 160),
                (1.25, 1.25, 1.2),
                (192.0, 240.0, 240.0),
                "PSR",
                "MPRAGE ADNI",
            ),
            "T2w": _t2w_tse(4.5, 0.098, (0.9, 0.9, 4.0), "LAS"),
        },
        noise_fraction=0.03,
        bias_amplitude=0.15,
        white_level=800.0,
    ),
    Site(
        "site5",
        "GE MEDICAL SYSTEMS",
        "Signa HDxt",
        1.5,
        "000000215633MR1",
        "GEHDXT15",
        "Valley Neurology Institute",
        "15\\LX\\MR Software release:15.0_M4_0910.a",
        "8HRBRAIN",
        {
            "T1w": Protocol(
                "T1w",
                InversionRecoveryGradientEcho("IR-FSPGR", 0.6, 0.004, 10.0, 0.0087, 1.8, 110),
                (1.2, 0.94, 0.94),
                (200.0, 240.0, 240.0),
                "PSR",
                "SAG IR-SPGR",
            ),
            "T2w": _t2w_tse(4.0, 0.09, (0.94, 0.94, 5.0), "LAS"),
        },
        noise_fraction=0.035,
        bias_amplitude=0.12,
        white_level=1800.0,
        intensity_offset=10.0,
    ),
    Site(
        "site6",
        "Philips Medical Systems",
        "Achieva dStream",
        3.0,
        "51120",
        "PHILIPS-ACH3T",
        "Harbour Brain Research Unit",
        "5.1.7\\5.1.7.2",
        "dS Head 32ch",
        {
            "T1w": Protocol(
                "T1w",
                InversionRecoveryGradientEcho("T1TFE", 0.9, 0.0031, 9.0, 0.0068, 2.5, 170),
                (1.0, 1.0, 1.0),
                (256.0, 256.0, 170.0),
                "RAS",
                "T1W_3D_TFE",
            ),
            "T2w": _t2w_tse(3.5, 0.08, (1.0, 1.0, 2.0), "RAS"),
        },
        noise_fraction=0.02,
        bias_amplitude=0.28,
        white_level=2600.0,
    ),
)


def _another_unit(template: Site, number: int, rng: np.random.Generator) -> Site:
    """A second unit of a catalogue model: own serial, station and slightly different protocols."""

    def jitter(protocol: Protocol) -> Protocol:
        sequence = protocol.sequence
        if hasattr(sequence, "inversion_time_s"):
            sequence = dataclasses.replace(
                sequence, inversion_time_s=round(sequence.inversion_time_s * rng.uniform(0.97, 1.03), 4)
            )
        return dataclasses.replace(protocol, sequence=sequence)

    serial = f"{template.serial_number}{number:02d}"
    return dataclasses.replace(
        template,
        label=f"site{number}",
        serial_number=serial,
        station_name=f"{template.station_name}-{number}",
        institution=f"{template.institution} (unit {number})",
        protocols={name: jitter(p) for name, p in template.protocols.items()},
        noise_fraction=round(template.noise_fraction * rng.uniform(0.8, 1.2), 4),
        bias_amplitude=round(template.bias_amplitude * rng.uniform(0.8, 1.2), 4),
    )


def choose_sites(n_sites: int, seed: int = 0) -> list[Site]:
    """The first `n_sites` catalogue sites; beyond the catalogue, further units of its models."""
    if n_sites < 1:
        raise ValueError("n_sites must be at least 1")
    rng = np.random.default_rng(np.random.SeedSequence([seed, 7]))
    sites = list(CATALOGUE[:n_sites])
    for number in range(len(CATALOGUE) + 1, n_sites + 1):
        sites.append(_another_unit(CATALOGUE[(number - 1) % len(CATALOGUE)], number, rng))
    return sites
