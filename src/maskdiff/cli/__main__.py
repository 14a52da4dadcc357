import sys

from maskdiff.cli.main import main

sys.exit(main())
