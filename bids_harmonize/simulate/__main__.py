from bids_harmonize.simulate.cli import main

raise SystemExit(main())
