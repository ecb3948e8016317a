"""``python -m torpor``: the command line (torpor.cli)."""

import sys

from .cli import main

sys.exit(main())
