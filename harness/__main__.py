"""Allow ``python -m harness`` as a synonym for the ``mimic`` command."""

from harness.cli import main

raise SystemExit(main())
