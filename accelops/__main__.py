"""``python -m accelops``: the same report as the ``ds_report`` console script."""
import sys

from .report import main

if __name__ == "__main__":
    sys.exit(main())
