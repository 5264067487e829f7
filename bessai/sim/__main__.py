"""``python -m bessai.sim``: same as the ``bessai-sim`` console script."""

import sys

from bessai.sim.cli import main

sys.exit(main())
