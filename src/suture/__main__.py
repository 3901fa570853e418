"""``python -m suture``: the same command line as the ``suture`` script."""

from suture.cli import main

raise SystemExit(main())
