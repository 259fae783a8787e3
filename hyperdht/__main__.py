"""``python -m hyperdht``: the same as the ``hyperdht`` command."""

import sys

from .cli.node import main

sys.exit(main())
