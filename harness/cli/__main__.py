"""``python -m harness.cli`` runs the ``mimic`` command."""

from harness.cli import main

raise SystemExit(main())
