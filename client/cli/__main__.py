"""``python -m ciphergrad.client.cli``: the ``ciphergrad`` command."""

import sys

from ciphergrad.client.cli import main

sys.exit(main())
