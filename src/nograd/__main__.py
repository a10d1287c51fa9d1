"""``python -m nograd``: the same as the ``nograd`` command."""

import sys

from nograd.cli import main

if __name__ == "__main__":
    sys.exit(main())
