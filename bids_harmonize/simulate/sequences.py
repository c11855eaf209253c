"""Signal equations of the simulated pulse sequences.

Every `signal` takes T1 and T2 in seconds (scalars or arrays) and returns the magnitude signal per
unit proton density. Partial volumes are mixed by the caller, compartment by compartment.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from numpy.typing import ArrayLike, NDArray


@dataclass(frozen=True)
class InversionRecoveryGradientEcho:
    """MPRAGE (Siemens), IR-FSPGR/BRAVO (GE), inversion-prepared 3D TFE (Philips).

    One inversion, a delay, then a train of `excitations_per_inversion` spoiled gradient echoes
    with linear k-space ordering; `inversion_time_s` runs from the inversion to the k-space centre
    (the middle of the train), as in Deichmann et al., NeuroImage 12:112-127 (2000).
    """

    name: str
    inversion_time_s: float
    echo_time_s: float
    flip_angle_deg: float
    echo_spacing_s: float
    cycle_time_s: float
    excitations_per_inversion: int

    def __post_init__(self) -> None:
        if self._delay_before_train() < 0 or self._recovery_after_train() < 0:
            raise ValueError(f"{self.name}: inversion time and echo train do not fit the cycle time")

    def _delay_before_train(self) -> float:
        return self.inversion_time_s - self.excitations_per_inversion / 2 * self.echo_spacing_s

    def _recovery_after_train(self) -> float:
        train = self.excitations_per_inversion * self.echo_spacing_s
        return self.cycle_time_s - self._delay_before_train() - train

    def signal(self, t1_s: ArrayLike, t2_s: ArrayLike) -> NDArray[np.float64]:
        t1 = np.asarray(t1_s, dtype=np.float64)
        alpha = np.deg2rad(self.flip_angle_deg)
        n = self.excitations_per_inversion
        decay_per_pulse = np.cos(alpha) * np.exp(-self.echo_spacing_s / t1)
        train_steady_state = (1 - np.exp(-self.echo_spacing_s / t1)) / (1 - decay_per_pulse)
        e_delay = np.exp(-self._delay_before_train() / t1)
        e_recovery = np.exp(-self._recovery_after_train() / t1)
        decay_train = decay_per_pulse**n
        # Longitudinal magnetisation just before each inversion, in the periodic steady state
        # (M0 = 1): solve M = 1 - e_rec * (1 - M_end_of_train(M)) for M.
        before_inversion = (
            1 - e_recovery * (1 - train_steady_state) * (1 - decay_train) - e_recovery * e_delay * decay_train
        ) / (1 + e_delay * e_recovery * decay_train)
        train_start = 1 - (1 + before_inversion) * e_delay
        at_centre = train_steady_state + (train_start - train_steady_state) * decay_per_pulse ** (n / 2)
        return np.abs(at_centre) * np.sin(alpha) * np.exp(-self.echo_time_s / np.asarray(t2_s))

    def sidecar_fields(self, tr_is_preparation: bool) -> dict[str, object]:
        """BIDS timing fields; Siemens reports the inversion cycle as RepetitionTime, GE and
        Philips the echo spacing (`tr_is_preparation` chooses)."""
        return {
            "ScanningSequence": "GR\\IR",
            "SequenceVariant": "SK\\SP\\MP",
            "PulseSequenceType": self.name,
            "MRAcquisitionType": "3D",
            "RepetitionTime": self.cycle_time_s if tr_is_preparation else self.echo_spacing_s,
            "RepetitionTimeExcitation": self.echo_spacing_s,
            "RepetitionTimePreparation": self.cycle_time_s,
            "EchoTime": self.echo_time_s,
            "InversionTime": self.inversion_time_s,
            "FlipAngle": self.flip_angle_deg,
        }


@dataclass(frozen=True)
class SpinEcho:
    """Spin echo / turbo spin echo: 90-degree excitation, refocusing at TE/2, repeated every TR."""

    name: str
    repetition_time_s: float
    echo_time_s: float
    acquisition_type: str = "2D"

    def signal(self, t1_s: ArrayLike, t2_s: ArrayLike) -> NDArray[np.float64]:
        t1 = np.asarray(t1_s, dtype=np.float64)
        tr, te = self.repetition_time_s, self.echo_time_s
        longitudinal = 1 - 2 * np.exp(-(tr - te / 2) / t1) + np.exp(-tr / t1)
        return longitudinal * np.exp(-te / np.asarray(t2_s))

    def sidecar_fields(self, tr_is_preparation: bool) -> dict[str, object]:
        del tr_is_preparation  # no preparation block: every vendor reports the same TR
        return {
            "ScanningSequence": "SE",
            "SequenceVariant": "SK\\SP",
            "PulseSequenceType": self.name,
            "MRAcquisitionType": self.acquisition_type,
            "RepetitionTime": self.repetition_time_s,
            "EchoTime": self.echo_time_s,
            "FlipAngle": 90.0,
        }


@dataclass(frozen=True)
class InversionRecoverySpinEcho:
    """2D inversion-recovery (turbo) spin echo, the clinical "T1 FLAIR": inversion, TI, then a
    spin echo; repeated every TR."""

    name: str
    repetition_time_s: float
    echo_time_s: float
    inversion_time_s: float

    def signal(self, t1_s: ArrayLike, t2_s: ArrayLike) -> NDArray[np.float64]:
        t1 = np.asarray(t1_s, dtype=np.float64)
        tr, ti = self.repetition_time_s, self.inversion_time_s
        longitudinal = 1 - 2 * np.exp(-ti / t1) + np.exp(-tr / t1)
        return np.abs(longitudinal) * np.exp(-self.echo_time_s / np.asarray(t2_s))

    def sidecar_fields(self, tr_is_preparation: bool) -> dict[str, object]:
        del tr_is_preparation  # the inversion repeats every TR: every vendor reports the same TR
        return {
            "ScanningSequence": "SE\\IR",
            "SequenceVariant": "SK\\SP",
            "PulseSequenceType": self.name,
            "MRAcquisitionType": "2D",
            "RepetitionTime": self.repetition_time_s,
            "EchoTime": self.echo_time_s,
            "InversionTime": self.inversion_time_s,
            "FlipAngle": 90.0,
        }


Sequence = InversionRecoveryGradientEcho | SpinEcho | InversionRecoverySpinEcho
