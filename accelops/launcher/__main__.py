"""``python -m accelops.launcher``: the same program as ``ds_launch``."""
import sys

from .cli import main

sys.exit(main())
