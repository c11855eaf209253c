"""Quality metrics for harmonization: similarity to ground truth, residual site effect,
anatomy preservation; and the baseline harmonizers they are compared against. See docs/qc.md."""

from bids_harmonize.qc.anatomy import AnatomyScores, anatomy_preservation, compare_labels, segment_tissues
from bids_harmonize.qc.baselines import Harmonizer, baseline_harmonizers
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
    "Harmonizer",
    "SimilarityScores",
    "SiteClassification",
    "anatomy_preservation",
    "baseline_harmonizers",
    "between_site_wasserstein",
    "compare_labels",
    "robust_rescale",
    "segment_tissues",
    "similarity",
    "site_classifier_accuracy",
    "site_features",
]
