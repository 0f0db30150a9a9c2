"""`python -m edgecvm` is the same as the `edgecvm` console script."""

from edgecvm.cli import main

raise SystemExit(main())
