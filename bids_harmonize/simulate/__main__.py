# `python -m bids_harmonize.simulate`: importing this package already needs the 'simulate' extra,
# so the simulator's own CLI runs directly (the console script's check for the extra lives in
# cli/simulate.py, which imports nothing of this package until the extra is found).
from bids_harmonize.simulate.cli import main

raise SystemExit(main())
