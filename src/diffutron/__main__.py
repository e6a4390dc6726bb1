"""``python -m diffutron``: the same as the ``diffutron`` command."""

import sys

from diffutron.cli import main

sys.exit(main())
