"""``python -m workkit_workflow``: the ``workkit-workflow`` CLI without needing it on PATH."""

from .cli import main

if __name__ == "__main__":
    raise SystemExit(main())
