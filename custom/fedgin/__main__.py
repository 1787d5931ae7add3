import sys

from fedgin.tools.cli import main

sys.exit(main())
