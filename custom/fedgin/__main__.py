import sys

from fedgin.cli import main

sys.exit(main())
