"""``python -m meshloop`` runs the command line."""

import sys

from meshloop.cli import main

sys.exit(main())
