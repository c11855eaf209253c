"""Visual reports: OUT/sub-<label>.html per participant, OUT/group.html, and the methods text
OUT/logs/CITATION.md (+ .bib). See docs/reports.md."""

from bids_harmonize.reports.build import skip_reasons, write_reports
from bids_harmonize.reports.citation import MethodsFacts, ModelUse

__all__ = ["MethodsFacts", "ModelUse", "skip_reasons", "write_reports"]
