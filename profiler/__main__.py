from profiler.cli.main import main

raise SystemExit(main())
