"""``python -m actors.bench`` = ``parallel-agents bench``."""

import sys

from actors.bench.cli import main

sys.exit(main())
