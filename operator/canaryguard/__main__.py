"""`python -m canaryguard`: the same as the `canaryguard` command."""

import sys

from canaryguard.cli.main import main

sys.exit(main())
