"""`python -m nopeek.cli ...`: the same as the `nopeek` console script."""

import sys

from nopeek.cli._main import main

sys.exit(main())
