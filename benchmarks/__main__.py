"""``python -m benchmarks [--events N] [--quick] ...``: see ``benchmarks.harness``."""

from benchmarks.harness import main

raise SystemExit(main())
