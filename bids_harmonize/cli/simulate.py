"""``bids_harmonize-simulate``: checks that the 'simulate' extra is installed, then runs the CLI.

The product (participant/group levels, the container image) does not need the simulator's
dependencies; without them this says how to install them instead of an ImportError traceback.
It lives outside bids_harmonize.simulate because importing that package already needs them.
"""

from __future__ import annotations

import importlib.util

from bids_harmonize import console

EXTRA_MODULES = ("nilearn",)


def main(argv: list[str] | None = None) -> int:
    missing = [name for name in EXTRA_MODULES if importlib.util.find_spec(name) is None]
    if missing:
        console.error(
            f"bids_harmonize-simulate: error: {', '.join(missing)} not installed; the simulator is an optional part "
            "of bids_harmonize. Fix: pip install 'bids_harmonize[simulate]'"
        )
        return 1
    from bids_harmonize.simulate.cli import main as simulate

    return simulate(argv)
