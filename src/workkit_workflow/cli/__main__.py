"""``python -m workkit_workflow.cli``: the ``workkit-workflow`` command."""

import sys

from . import main

if __name__ == "__main__":
    sys.exit(main())
