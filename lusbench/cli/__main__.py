"""``python -m lusbench.cli``: the same entry point as the ``lusbench`` script."""

import sys

from lusbench.cli.main import main

sys.exit(main())
