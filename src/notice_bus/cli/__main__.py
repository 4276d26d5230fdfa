"""``python -m notice_bus.cli``: the ``notice-bus`` command."""

import sys

from notice_bus.cli import main

sys.exit(main())
