"""``python -m ppl_dgm.cli``: the same as ``ppl-dgm``."""

import sys

from ppl_dgm.cli import main

sys.exit(main())
