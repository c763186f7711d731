"""The chaos run, start to end: services, processes, load, the faults, catch-up, the verdict.

Phases (each logged to the timeline):

1. services and processes (tests.chaos.stack); the first snapshot is indexed;
2. the load starts, and the schedule's faults are done one after the other: each at
   its planned moment or once the previous one has recovered, whichever is later;
   the recovery of each (every partition's applied_ts past the moment the fault
   ended) is timed;
3. the load is stopped; the emulator closes one more timestamp T; the run waits
   until ``searchsync status`` shows buffer 0, every applied_ts past T and no
   reconcile pending;
4. ``searchsync verify --json``, the dead-letter stream, the verdict.

Teardown runs whatever happened (failure, Ctrl-C, SIGTERM): every process and
service this run started is stopped, and the schema dropped. The run directory is
removed after a passing run unless ``keep``.
"""

from __future__ import annotations

import json
import random
import re
import shutil
import signal
import sys
import time
import traceback
from dataclasses import dataclass
from pathlib import Path
from types import FrameType
from typing import Any

import redis

from searchsync.common.keys import Keys
from tests.chaos.faults import PRODUCERS, Injector
from tests.chaos.observe import Frontier, run_verify, wait_caught_up
from tests.chaos.poison import DeadLetters, classify, read_dead_letters
from tests.chaos.report import Recovery, RunResult, summary, verdict_json
from tests.chaos.schedule import Fault, Kind, build_schedule
from tests.chaos.stack import PARTITIONS, VIEW, ChaosStack
from tests.chaos.timeline import Timeline
from tests.support.processes import ROOT

__all__ = ["Options", "main_run"]

EXIT_PASSED, EXIT_FAILED, EXIT_HARNESS, EXIT_INTERRUPTED = 0, 1, 2, 130
ORDERS = 3000
SETTLE_SECONDS = 10.0
CATCH_UP_TIMEOUT = 180.0
FIRST_SNAPSHOT_TIMEOUT = 120.0
MIN_GAP_SECONDS = 1.0
# Seconds a fault's recovery may take before the run notes it and moves on.
RECOVER_TIMEOUT: dict[Kind, float] = {
    Kind.OPENSEARCH_STOP: 120.0,
    Kind.COMPACTION: 120.0,
    Kind.UNAUTHORIZED: 90.0,
    Kind.REDIS_RESTART: 90.0,
}
DEFAULT_RECOVER_TIMEOUT = 60.0
# No frontier moving for this long is a stall (the slowest recovery seen on a busy box
# moved within ~10 s); once stalled, later faults only check for 5 s whether it moves.
STALL_SECONDS = 40.0
STILL_STALLED_SECONDS = 5.0
_WROTE = re.compile(r"wrote (\d+) changes")


@dataclass(frozen=True, slots=True)
class Options:
    seed: int
    minutes: float
    rate: float
    json_only: bool
    keep: bool
    run_dir: Path | None


class Interrupted(BaseException):
    """SIGINT or SIGTERM: stop, tear down, report nothing.

    A BaseException, like KeyboardInterrupt: libraries catch Exception broadly (redis-py
    turns anything raised while connecting into a ConnectionError, which a poll then
    treats as "Redis down"), and the signal must not be lost in one of those.
    """


_signalled: list[str] = []  # also checked between polls, in case a library swallowed it


def _interrupt(signum: int, frame: FrameType | None) -> None:
    _signalled.append(signal.Signals(signum).name)
    raise Interrupted(_signalled[0])


def _run_dir(options: Options) -> Path:
    if options.run_dir is not None:
        options.run_dir.mkdir(parents=True, exist_ok=True)
        return options.run_dir
    stamp = time.strftime("%Y%m%d-%H%M%S")
    path = ROOT / ".devstack" / "chaos" / f"{stamp}-seed{options.seed}"
    path.mkdir(parents=True, exist_ok=True)
    return path


def _write_json(path: Path, value: Any) -> None:
    path.write_text(json.dumps(value, indent=2, default=str) + "\n")


class ChaosRun:
    """One run; :meth:`execute` returns the result (or raises for a harness error)."""

    def __init__(self, options: Options, run_dir: Path, timeline: Timeline) -> None:
        self.options = options
        self.run_dir = run_dir
        self.say = timeline.say
        self.phase_seconds = options.minutes * 60
        self.schedule = build_schedule(options.seed, self.phase_seconds)
        self.stack = ChaosStack(run_dir, timeline, orders=ORDERS, seed=options.seed)
        self.injector = Injector(self.stack, self.say)
        self.frontier = Frontier(self.stack)
        self.recoveries: list[Recovery] = []
        self.stalled = ""  # the fault after which the pipeline stopped moving, if it did
        self.done_counts: dict[str, int] = {}
        self.load_error = ""

    # -- phases

    def execute(self, started: float) -> RunResult:
        _write_json(self.run_dir / "schedule.json", [f.to_json() for f in self.schedule])
        self.say(f"schedule: {len(self.schedule)} events ({self.run_dir / 'schedule.json'})")
        self._start()
        load_started = time.monotonic()
        for fault in self.schedule:
            self._do(fault, load_started)
        self._wait_until(load_started + self.phase_seconds)
        changes = self._stop_load()
        return self._finish(changes, started)

    def _start(self) -> None:
        # history kept for the whole run, so a restarted producer resumes exactly;
        # only the compaction fault takes it away
        retain_ms = int((self.phase_seconds + 1800) * 1000)
        self.stack.start_services(retain_ms)
        self.stack.start_producer(PRODUCERS[0])
        self.stack.start_producer(PRODUCERS[1])
        self.stack.start_consumer("consumer-1")
        self.say("producers producer-a (active), producer-b (standby); consumer-1")
        since = int(time.time() * 1000)
        first = self.frontier.wait_past(
            since, FIRST_SNAPSHOT_TIMEOUT, FIRST_SNAPSHOT_TIMEOUT, self._idle
        )
        if first.seconds is None:
            raise RuntimeError(
                f"the first snapshot was not applied ({first.why}; see "
                f"{self.run_dir}/producer-a.log, consumer-1.log)"
            )
        self.say(f"snapshot of {ORDERS} orders indexed ({first.seconds:.1f}s)")
        differs = self.frontier.agrees_with_cli()
        if differs:
            raise RuntimeError(f"searchsync status and the applied hash disagree: {differs}")
        load_seconds = self.phase_seconds + 3600  # stopped by SIGTERM at the phase's end
        self.stack.start_load(self.options.rate, load_seconds, self.options.seed)
        self.say(f"load: {self.options.rate:g} changes/s ({self.run_dir / 'load.log'})")

    def _do(self, fault: Fault, load_started: float) -> None:
        self._wait_until(load_started + fault.at)
        total = len(self.schedule)
        self.say(f"fault {fault.number}/{total} {fault.kind} (planned at +{fault.at:.0f}s)")
        done = self.injector.inject(fault)
        self.say(f"  {done.detail}")
        if fault.kind is Kind.PLANT_POISON:
            _write_json(self.run_dir / "planted.json", [p.to_json() for p in self.injector.planted])
            return
        self.done_counts[fault.kind] = self.done_counts.get(fault.kind, 0) + 1
        self._recover(fault, done.ended)
        self._wait_until(time.monotonic() + MIN_GAP_SECONDS)

    def _recover(self, fault: Fault, ended: float) -> None:
        timeout = RECOVER_TIMEOUT.get(fault.kind, DEFAULT_RECOVER_TIMEOUT)
        stall = STILL_STALLED_SECONDS if self.stalled else STALL_SECONDS
        wait = self.frontier.wait_past(int(ended * 1000), timeout, stall, self._idle)
        why = wait.why + (f" (stalled since {self.stalled})" if self.stalled else "")
        self.recoveries.append(Recovery(fault.number, str(fault.kind), wait.seconds, why))
        if wait.seconds is not None:
            self.stalled = ""
            self.say(f"  recovered {wait.seconds:.1f}s after the fault ended")
            return
        self.stalled = self.stalled or f"fault {fault.number} {fault.kind}"
        self.say(f"  NOT recovered: {why}; applied_ts {self.frontier.applied()}")

    def _stop_load(self) -> int:
        load = self.stack.load
        assert load is not None
        if not load.alive():
            self.load_error = f"the load generator exited early with {load.returncode()}"
        code = load.stop(60)
        text = load.log_path.read_text(errors="replace")
        found = _WROTE.findall(text)
        if code not in (0, None) and not self.load_error:
            self.load_error = f"the load generator exited with {code}"
        if not found:
            self.load_error = self.load_error or "the load generator printed no summary"
            return 0
        self.say(f"load stopped: {text.strip().splitlines()[-1]}")
        return int(found[-1])

    def _finish(self, changes: int, started: float) -> RunResult:
        assert self.stack.emulator is not None
        target = self.stack.emulator.admin("mzemu_tick()")  # every commit is at or below it
        self.say(f"waiting for the pipeline to apply everything through ts {target}")
        catch = wait_caught_up(self.stack, target, CATCH_UP_TIMEOUT, STALL_SECONDS, self._idle)
        _write_json(self.run_dir / "status-final.json", catch.status)
        self.say(
            f"caught up in {catch.seconds:.1f}s"
            if catch.ok
            else f"NOT caught up after {catch.seconds:.0f}s: {catch.why}"
        )
        verify = run_verify(self.stack, SETTLE_SECONDS)
        self.say(
            f"verify: {verify.error or ('OK' if verify.ok else 'DRIFT')}, "
            f"{verify.documents_checked} documents, {len(verify.drift_keys)} keys differ"
        )
        letters, dead = self._dead_letters()
        self.say(
            f"dlq: {len(letters)} letters, {len(dead.unexpected)} unexpected, "
            f"{len(dead.missing)} planted missing, {len(dead.duplicates)} duplicates"
        )
        return RunResult(
            seed=self.options.seed,
            minutes=self.options.minutes,
            changes_written=changes,
            faults=dict(sorted(self.done_counts.items())),
            documents_checked=verify.documents_checked,
            drift_keys=verify.drift_keys,
            verify_report=verify.report,
            verify_error=verify.error,
            letters=letters,
            dead=dead,
            planted=self.injector.planted,
            recoveries=self.recoveries,
            seconds=time.monotonic() - started,
            run_dir=self.run_dir,
            caught_up=catch.ok,
            catch_up_why=catch.why,
            anomalies=self.injector.anomalies,
            violations=self.frontier.violations,
            load_error=self.load_error,
        )

    def _dead_letters(self) -> tuple[list[dict[str, str]], DeadLetters]:
        client = redis.Redis(port=self.stack.redis.port, socket_timeout=10)
        try:
            letters = read_dead_letters(client, Keys(VIEW, PARTITIONS).dlq)
        finally:
            client.close()
        _write_json(self.run_dir / "dlq.json", letters)
        return letters, classify(letters, self.injector.planted)

    # -- waiting

    def _idle(self) -> None:
        if _signalled:
            raise Interrupted(_signalled[0])
        self.injector.watchdog()
        self.frontier.applied()  # between faults too: it checks the invariants as it reads

    def _wait_until(self, moment: float) -> None:
        """Sleep until the monotonic ``moment``, keeping the watchdog running."""
        while (left := moment - time.monotonic()) > 0:
            self._idle()
            time.sleep(min(0.5, left))

    def close(self) -> None:
        self.stack.close()


def _emit(line: dict[str, Any]) -> None:
    sys.stdout.write(json.dumps(line, separators=(",", ":")) + "\n")
    sys.stdout.flush()


def main_run(options: Options) -> int:
    started = time.monotonic()
    run_dir = _run_dir(options)
    timeline = Timeline(run_dir / "chaos.log", echo=not options.json_only)
    print(f"chaos run: seed {options.seed}, logs in {run_dir}", file=sys.stderr, flush=True)
    previous = {s: signal.signal(s, _interrupt) for s in (signal.SIGINT, signal.SIGTERM)}
    run = ChaosRun(options, run_dir, timeline)
    result: RunResult | None = None
    code = EXIT_HARNESS
    try:
        result = run.execute(started)
        code = EXIT_PASSED if result.ok else EXIT_FAILED
    except Interrupted as why:
        timeline.say(f"interrupted ({why}): stopping everything")
        code = EXIT_INTERRUPTED
    except Exception:
        timeline.say("HARNESS ERROR:\n" + traceback.format_exc())
        print(f"chaos run: harness error (see {run_dir}/chaos.log):", file=sys.stderr)
        traceback.print_exc()
    finally:
        for sig in previous:  # a second Ctrl-C must not cut the teardown short
            signal.signal(sig, signal.SIG_IGN)
        run.close()
        timeline.say("everything stopped")
        timeline.close()
        for sig, handler in previous.items():
            signal.signal(sig, handler)
    if result is None:
        what = "interrupted" if code == EXIT_INTERRUPTED else "harness error"
        _emit(
            {
                "seed": options.seed,
                "minutes": options.minutes,
                "error": what,
                "run_dir": str(run_dir),
            }
        )
        return code
    result.seconds = time.monotonic() - started
    verdict = verdict_json(result)
    _write_json(run_dir / "result.json", verdict)
    if result.ok and not options.keep:
        shutil.rmtree(run_dir, ignore_errors=True)
        result.kept = False
    print(summary(result), file=sys.stderr, flush=True)
    _emit(verdict)
    return code


def random_seed() -> int:
    return random.SystemRandom().randrange(1_000_000)
