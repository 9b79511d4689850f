from nightshift_cli.main import main

raise SystemExit(main())
