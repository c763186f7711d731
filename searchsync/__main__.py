"""``python -m searchsync``: the same as the ``searchsync`` command."""

from searchsync.cli.main import main

main()
