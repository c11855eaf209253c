"""The record of one discovered image, shared by discovery, site inference and the workflows."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any


@dataclass(frozen=True)
class ImageRecord:
    """One T1w/T2w image with its BIDS entities, merged sidecar metadata and header geometry."""

    path: Path  # absolute
    relpath: str  # POSIX path relative to the BIDS root, e.g. sub-01/anat/sub-01_T1w.nii.gz
    subject: str
    session: str | None
    suffix: str  # the contrast: T1w or T2w
    entities: dict[str, Any] = field(default_factory=dict, compare=False)
    metadata: dict[str, Any] = field(default_factory=dict, compare=False)
    voxel_size: tuple[float, ...] | None = None
    shape: tuple[int, ...] | None = None

    @property
    def bids_uri(self) -> str:
        """The BIDS URI of the raw image, resolved through DatasetLinks 'raw' in derivatives."""
        return f"bids:raw:{self.relpath}"

    def to_json(self) -> dict[str, Any]:
        """Plain-JSON form, for passing a record through Nipype node inputs."""
        return {
            "path": str(self.path),
            "relpath": self.relpath,
            "subject": self.subject,
            "session": self.session,
            "suffix": self.suffix,
            "entities": self.entities,
            "metadata": self.metadata,
            "voxel_size": list(self.voxel_size) if self.voxel_size else None,
            "shape": list(self.shape) if self.shape else None,
        }

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> ImageRecord:
        return cls(
            path=Path(data["path"]),
            relpath=data["relpath"],
            subject=data["subject"],
            session=data["session"],
            suffix=data["suffix"],
            entities=data["entities"],
            metadata=data["metadata"],
            voxel_size=tuple(data["voxel_size"]) if data["voxel_size"] else None,
            shape=tuple(data["shape"]) if data["shape"] else None,
        )
