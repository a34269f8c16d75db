"""``python -m client.compare``: the same as ``ciphergrad compare``."""

import sys

from client.compare.command import main

sys.exit(main())
