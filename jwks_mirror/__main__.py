import sys

from jwks_mirror.cli import main

sys.exit(main())
