"""`python -m iobs.cli`: the same as the `iobs` console script."""

import sys

from iobs.cli import main

sys.exit(main())
