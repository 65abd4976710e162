"""``python -m eval NAME ...``: the dispatcher in :mod:`eval.cli`."""

import sys

from eval.cli import main

sys.exit(main())
