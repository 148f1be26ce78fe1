"""``python -m ppl_dgm``: the same as ``ppl-dgm`` (and the form ``torchrun ... -m ppl_dgm fit ...`` takes)."""

import sys

from ppl_dgm.cli import main

sys.exit(main())
