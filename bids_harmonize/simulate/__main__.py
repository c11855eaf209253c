from bids_harmonize.simulate.entry import main

raise SystemExit(main())
