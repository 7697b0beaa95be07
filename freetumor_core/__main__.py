"""``python -m freetumor_core`` is the same as ``freetumor``."""

import sys

from .cli import main

sys.exit(main())
