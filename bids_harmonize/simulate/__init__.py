"""Multi-site MRI phantom: the same anatomies as if scanned at several sites, with ground truth.

`simulate_dataset(...)` writes a BIDS dataset plus `derivatives/ground_truth/`; the console script
`bids_harmonize-simulate` (also `python -m bids_harmonize.simulate`) does the same from a shell.
See docs/simulator.md.
"""

from bids_harmonize.simulate.dataset import SimulatedDataset, simulate_dataset
from bids_harmonize.simulate.render import add_rician_noise, noise_sigma
from bids_harmonize.simulate.sites import CATALOGUE, Protocol, Site, choose_sites

__all__ = [
    "CATALOGUE",
    "Protocol",
    "SimulatedDataset",
    "Site",
    "add_rician_noise",
    "choose_sites",
    "noise_sigma",
    "simulate_dataset",
]
