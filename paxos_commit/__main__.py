from paxos_commit.cli import main

raise SystemExit(main())
