from kubemam.cli import main

raise SystemExit(main())
