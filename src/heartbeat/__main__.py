from heartbeat.cli import main

raise SystemExit(main())
