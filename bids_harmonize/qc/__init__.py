"""Quality metrics for harmonization: similarity to ground truth, residual site effect,
anatomy preservation (see docs/qc.md). The baseline harmonizers they are compared against live in
bids_harmonize.qc.baselines, which needs the 'qc' extra (intensity-normalization)."""

from bids_harmonize.qc.anatomy import AnatomyScores, anatomy_preservation, compare_labels, segment_tissues
from bids_harmonize.qc.intensity import robust_rescale
from bids_harmonize.qc.similarity import SimilarityScores, similarity
from bids_harmonize.qc.site_effect import (
    SiteClassification,
    between_site_wasserstein,
    site_classifier_accuracy,
    site_features,
)

__all__ = [
    "AnatomyScores",
    "SimilarityScores",
    "SiteClassification",
    "anatomy_preservation",
    "between_site_wasserstein",
    "compare_labels",
    "robust_rescale",
    "segment_tissues",
    "similarity",
    "site_classifier_accuracy",
    "site_features",
]
