"""``python -m agents.cli`` runs the ``textenv`` command (as the console script does)."""

from agents.cli.app import main

raise SystemExit(main())
