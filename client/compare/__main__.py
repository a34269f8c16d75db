"""``python -m ciphergrad.client.compare``: the same as ``ciphergrad compare``."""

import sys

from ciphergrad.client.compare.command import main

sys.exit(main())
