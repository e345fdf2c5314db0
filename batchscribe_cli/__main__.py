import sys

from batchscribe_cli.cli import main

sys.exit(main())
