"""Helpers shared by the tests (not test modules): real services, real processes.

``services``: free ports, polling, a private redis-server, a TCP proxy to cut;
``mzemu``: private FreshMart schemas and emulator processes; ``producer`` and
``consumer``: stacks and processes for those tests.
"""
