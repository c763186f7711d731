"""The chaos run: real processes and real services, seeded faults, one verdict.

    .venv/bin/python -m tests.chaos [--seed S] [--minutes N] [--json-only] [--keep]

Proves that the pipeline loses nothing and dead-letters nothing by mistake while
producers and consumers are killed, Redis restarts, OpenSearch goes away or answers
401, Materialize drops connections or compacts its history, and consumers scale.
Modules: ``schedule`` (the seeded faults, pure), ``stack`` (what runs), ``faults``
(doing them), ``observe`` (recovery, catch-up, verify), ``poison`` (planted dead
letters), ``report`` (the JSON line and the summary, pure), ``run`` (the phases).
Not a pytest module: scripts/chaos runs it as a command (.ci/run, after scripts/test).
"""
