"""``python -m actors`` is the ``parallel-agents`` command."""

import sys

from actors.cli.main import main

sys.exit(main())
