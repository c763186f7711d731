"""Processes and private services shared by the tests and the benches.

``services`` (free ports, polling, a private redis-server, a TCP proxy to cut),
``mzemu`` (private FreshMart schemas and emulator processes), ``producer`` and
``consumer`` (their ``python -m`` processes; a producer stack of schema, emulator
and Redis), ``pipeline`` (a stack plus consumers, an index alias and the CLI).
Needs the devstack's services (``.devstack/env``). The pytest fixtures over these
live in ``tests/support``.
"""

__all__: list[str] = []
