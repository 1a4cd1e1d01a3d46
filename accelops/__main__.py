"""``python -m accelops``: the same report as the ``ds_report`` console script."""
import sys

from .report import main

sys.exit(main())
