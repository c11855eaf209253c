from bids_harmonize.cli.simulate import main

raise SystemExit(main())
