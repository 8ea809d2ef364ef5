"""``python -m compress``: see :mod:`compress.cli`."""

import sys

from compress.cli import main

if __name__ == "__main__":
    sys.exit(main())
