"""``python -m hgn_model.data.synthetic --help``."""

import sys

from ._cli import main

sys.exit(main())
