"""``searchsync``: the operator's command line (one module per command, cli.main)."""
