"""Deterministic simulation of the stream protocol (``python -m tests.sim``).

The consumer's own runner and worker code runs on a virtual-time event loop
(:mod:`tests.sim.loop`) against in-memory models of Redis Streams and OpenSearch
(:mod:`tests.sim.streams`, :mod:`tests.sim.index`), wired through the seams of
consumer.ports. A seed fixes everything: the change history, the schedule of
consumer joins, leaves, crashes and pauses, the failures and slow calls. The
invariants (:mod:`tests.sim.invariants`) are checked after every model step.
"""
