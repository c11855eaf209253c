"""Site inference: pure Python (no pybids, no Nipype) from metadata to labelled sites."""

from bids_harmonize.sites.assign import GRANULARITIES, UNKNOWN_SITE, SiteAssignment, assign_sites
from bids_harmonize.sites.overrides import SiteOverrides, load_overrides
from bids_harmonize.sites.signature import SitePolicy, load_policy

__all__ = [
    "GRANULARITIES",
    "UNKNOWN_SITE",
    "SiteAssignment",
    "SiteOverrides",
    "SitePolicy",
    "assign_sites",
    "load_overrides",
    "load_policy",
]
