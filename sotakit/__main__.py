"""`python -m sotakit` (also what torchrun runs with `-m sotakit`)."""

import sys

from .cli import main

sys.exit(main())
