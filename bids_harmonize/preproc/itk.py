"""nibabel <-> SimpleITK conversion.

nibabel affines map voxel indices to RAS+ millimetres; ITK images live in LPS+. The two
differ by a sign flip of x and y, applied to both the direction cosines and the origin.
"""

from __future__ import annotations

import nibabel as nb
import numpy as np
import SimpleITK as sitk

_RAS_TO_LPS = np.diag([-1.0, -1.0, 1.0])


def itk_affine_from_ras(ras: np.ndarray) -> sitk.AffineTransform:
    """An ITK affine equal to a 4x4 matrix acting on RAS millimetres (ITK points are LPS)."""
    transform = sitk.AffineTransform(3)
    transform.SetMatrix((_RAS_TO_LPS @ ras[:3, :3] @ _RAS_TO_LPS).ravel().tolist())
    transform.SetTranslation((_RAS_TO_LPS @ ras[:3, 3]).tolist())
    return transform


def to_sitk(img: nb.Nifti1Image, dtype: type = np.float32) -> sitk.Image:
    data = np.asarray(img.dataobj, dtype=dtype)
    image = sitk.GetImageFromArray(np.ascontiguousarray(data.transpose(2, 1, 0)))  # ITK wants z, y, x
    linear = _RAS_TO_LPS @ img.affine[:3, :3]
    spacing = np.linalg.norm(linear, axis=0)
    image.SetSpacing(tuple(float(s) for s in spacing))
    image.SetDirection(tuple((linear / spacing).ravel(order="C").tolist()))
    image.SetOrigin(tuple(float(v) for v in _RAS_TO_LPS @ img.affine[:3, 3]))
    return image


def to_nibabel(image: sitk.Image, dtype: type = np.float32) -> nb.Nifti1Image:
    data = sitk.GetArrayFromImage(image).transpose(2, 1, 0).astype(dtype)
    direction = np.array(image.GetDirection()).reshape(3, 3)
    affine = np.eye(4)
    affine[:3, :3] = _RAS_TO_LPS @ direction @ np.diag(image.GetSpacing())
    affine[:3, 3] = _RAS_TO_LPS @ np.array(image.GetOrigin())
    out = nb.Nifti1Image(data, affine)
    out.set_qform(affine, code=1)
    out.set_sform(affine, code=1)
    return out
