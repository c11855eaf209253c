"""Individual subjects: the population anatomy deformed, aged and placed in the scanner.

- Shape: a smooth random stationary velocity field integrated by scaling and squaring
  (a diffeomorphism), plus an outward push around the ventricles that grows with age.
- Atrophy: part of the GM fraction turns into CSF (thinning, in a smooth random pattern).
- Biology: per-subject scaling of the brain tissues' T1 and T2 (a few per cent).
- Head position: a random rigid transform (mostly pitch) and a random field-of-view shift.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from numpy.typing import NDArray
from scipy import ndimage
from scipy.spatial.transform import Rotation

from bids_harmonize.simulate.anatomy import Array, Grid, TemplateAnatomy
from bids_harmonize.simulate.fields import random_polynomial_field
from bids_harmonize.simulate.tissues import BRAIN_TISSUES

SCALING_AND_SQUARING_STEPS = 4
VELOCITY_DEGREE = 6  # shape changes on the scale of ~3 cm
VELOCITY_MAX_MM = 4.0
ATROPHY_PATTERN_DEGREE = 4
VENTRICLE_SMOOTHING_MM = 6.0
RELAXATION_VARIATION = 0.03


@dataclass(frozen=True)
class HeadPose:
    """Where the head sits in the scanner: scanner = rotation @ template + translation (RAS mm)."""

    rotation_deg: tuple[float, float, float]
    translation_mm: tuple[float, float, float]
    field_of_view_shift_mm: tuple[float, float, float]

    def template_to_scanner(self) -> NDArray[np.float64]:
        """4x4 world transform from template (RAS mm) to scanner (RAS mm) coordinates."""
        matrix = np.eye(4)
        matrix[:3, :3] = Rotation.from_euler("xyz", self.rotation_deg, degrees=True).as_matrix()
        matrix[:3, 3] = self.translation_mm
        return matrix


@dataclass(frozen=True)
class Subject:
    """One simulated person, on the template grid (after removing head position, not shape)."""

    label: str
    age: int
    sex: str
    ventricle_expansion_mm: float
    grey_matter_loss: float
    fractions: dict[str, Array]
    brain_mask: NDArray[np.bool_]
    t1_texture: Array
    t2_texture: Array
    relaxation_scale: dict[str, tuple[float, float]]
    pose: HeadPose


def _sample(image: NDArray, points: NDArray[np.float32]) -> NDArray:
    """Linear interpolation of `image` at voxel coordinates `points` (3, *shape)."""
    return ndimage.map_coordinates(image, points, order=1, mode="nearest")


def _ventricle_push(ventricles: NDArray[np.bool_], grid: Grid, expansion_mm: float) -> Array:
    """Velocity (voxels) pointing into the ventricles, largest `expansion_mm` at their walls:
    sampling from inside the ventricles enlarges them."""
    blurred = ndimage.gaussian_filter(ventricles.astype(np.float32), VENTRICLE_SMOOTHING_MM / grid.spacing_mm)
    gradient = np.stack(np.gradient(blurred))
    peak = np.sqrt((gradient**2).sum(axis=0)).max()
    if peak == 0:
        return np.zeros_like(gradient)
    return gradient * (expansion_mm / peak / grid.spacing_mm[:, None, None, None])


def _integrate(velocity: Array, identity: NDArray[np.float32]) -> Array:
    """Scaling and squaring: displacement of exp(velocity), both in voxels."""
    displacement = velocity / 2**SCALING_AND_SQUARING_STEPS
    for _ in range(SCALING_AND_SQUARING_STEPS):
        points = identity + displacement
        displacement = displacement + np.stack([_sample(component, points) for component in displacement])
    return displacement


def _random_pose(rng: np.random.Generator) -> HeadPose:
    pitch, roll, yaw = rng.normal(0.0, (6.0, 3.0, 3.0))
    return HeadPose(
        rotation_deg=(
            float(np.clip(pitch, -15, 15)),
            float(np.clip(roll, -8, 8)),
            float(np.clip(yaw, -8, 8)),
        ),
        translation_mm=tuple(float(t) for t in rng.normal(0.0, 5.0, 3)),
        field_of_view_shift_mm=tuple(float(s) for s in rng.uniform(-8.0, 8.0, 3)),
    )


def random_deformation(template: TemplateAnatomy, ventricle_expansion_mm: float, rng: np.random.Generator) -> Array:
    """Displacement field (voxels, shape (3, *grid)) of a random diffeomorphism: a smooth random
    velocity plus a push that enlarges the ventricles by about `ventricle_expansion_mm`,
    integrated by scaling and squaring. Subject anatomy = template sampled at x + displacement(x)."""
    grid = template.grid
    random_velocity = np.stack(
        [random_polynomial_field(grid.shape, VELOCITY_DEGREE, rng) * VELOCITY_MAX_MM / s for s in grid.spacing_mm]
    )
    velocity = random_velocity + _ventricle_push(template.ventricles, grid, ventricle_expansion_mm)
    return _integrate(velocity, np.indices(grid.shape, dtype=np.float32))


def make_subject(template: TemplateAnatomy, label: str, rng: np.random.Generator) -> Subject:
    """A new subject drawn from `rng` (reproducible for a seeded generator)."""
    grid = template.grid
    age = int(rng.integers(20, 81))
    years = (age - 20) / 60
    expansion_mm = float(4.0 * years**1.5 * rng.uniform(0.6, 1.4))
    grey_loss = float(0.15 * years * rng.uniform(0.5, 1.5))
    points = np.indices(grid.shape, dtype=np.float32) + random_deformation(template, expansion_mm, rng)

    def warp(image: Array) -> Array:
        return _sample(image, points)

    fractions = {name: warp(f) for name, f in template.fractions.items()}
    loss_pattern = 1.0 + 0.6 * random_polynomial_field(grid.shape, ATROPHY_PATTERN_DEGREE, rng)
    lost = fractions["GM"] * grey_loss * loss_pattern
    fractions["GM"] = fractions["GM"] - lost
    fractions["CSF"] = fractions["CSF"] + lost

    scales = rng.normal(1.0, RELAXATION_VARIATION, (len(BRAIN_TISSUES), 2))
    return Subject(
        label=label,
        age=age,
        sex=str(rng.choice(["F", "M"])),
        ventricle_expansion_mm=round(expansion_mm, 3),
        grey_matter_loss=round(grey_loss, 4),
        fractions=fractions,
        brain_mask=warp(template.brain_mask) > 0.5,
        t1_texture=warp(template.t1_texture),
        t2_texture=warp(template.t2_texture),
        relaxation_scale={name: (float(t1), float(t2)) for name, (t1, t2) in zip(BRAIN_TISSUES, scales, strict=True)},
        pose=_random_pose(rng),
    )
