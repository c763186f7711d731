"""Materialize SUBSCRIBE emulator over a real PostgreSQL (``python -m devstack.mzemu``).

The test double for Materialize only: it speaks Materialize's pgwire dialect
(SET CLUSTER, DECLARE … CURSOR FOR SUBSCRIBE, FETCH … WITH (timeout), COPY
(SUBSCRIBE …) TO STDOUT) and computes real, consolidated diffs of a real
PostgreSQL view; everything else is passed through to PostgreSQL.

Modules: ``wire`` (protocol codec), ``statements`` (parser), ``values`` (type
encodings), ``collection`` (arrangement and history), ``output`` (SUBSCRIBE row
layout), ``subscription`` (delivery rules), ``capture`` (trigger SQL), ``engine``
(ticks), ``backend`` (PostgreSQL link), ``server`` (listener), ``config``
(environment), ``memory`` (where the memory goes: opt-in, MZEMU_TRACEMALLOC),
``privileges`` (roles, GRANT/REVOKE, the checks on reads of the view), and one
client connection in layers: ``connection`` (state and output), ``variables``
(SET/SHOW), ``transactions`` (blocks), ``passthrough`` (relaying to PostgreSQL),
``cursors`` (DECLARE/FETCH/CLOSE), ``streaming`` (bare SUBSCRIBE, COPY TO STDOUT),
``execute`` (one statement), ``extended`` (extended query protocol), ``session``
(startup, message loop, simple queries).

Admin calls, for fault tests (each returns one int8)::

    SELECT mzemu_drop_connections()   -- abort every other client connection
    SELECT mzemu_pause_ticks(ms)      -- freeze the frontier for ms
    SELECT mzemu_resume_ticks()
    SELECT mzemu_tick()               -- close a timestamp now; returns it
    SELECT mzemu_compact()            -- forget retained history; returns the new since
    SELECT mzemu_frontier()           -- the upper frontier (last closed time + 1)
    SELECT mzemu_since()              -- the oldest valid AS OF
    SELECT mzemu_synthetic_rate(n)    -- n made-up changes/s from now on (0: none; synthetic)

Known differences from Materialize: one view is kept incrementally (by key);
``SUBSCRIBE (SELECT …)`` of anything else is re-evaluated in PostgreSQL on ticks
that changed something and has no history (its AS OF cannot precede its first
evaluation); ENVELOPE DEBEZIUM and WITHIN TIMESTAMP ORDER BY are refused;
statements outside SUBSCRIBE run with PostgreSQL's semantics, not Materialize's;
privileges are checked only on the kept view (``privileges``: its docstring says
what is modelled).
"""

__all__: list[str] = []
