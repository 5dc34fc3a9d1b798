"""`python -m playground ...`: see playground/cli.py."""

import sys

from playground.cli import main

sys.exit(main())
