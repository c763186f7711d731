"""Doing each fault of the schedule to the running stack, and watching for crashes.

Every method of :class:`Injector` does one fault and returns when it is over (the
process restarted, the service back, the 401 window closed) with the wall-clock
moment it ended: recovery is measured from there. What happened is written to the
timeline and to the affected process's log (``==== chaos: SIGKILL`` lines).

:meth:`Injector.watchdog` runs between polls: a searchsync process that exits
without the run having stopped it is a finding (it is recorded with the tail of its
log) and is restarted, as supervisord would.
"""

from __future__ import annotations

import random
import time
from collections.abc import Callable
from dataclasses import dataclass, field

import redis

from searchsync.common.keys import Keys
from tests.chaos.poison import Planted, plant
from tests.chaos.schedule import SCALE_DOWN_TO, SCALE_UP_TO, Fault, Kind
from tests.chaos.stack import PARTITIONS, VIEW, ChaosStack
from tests.support.processes import ManagedProcess

__all__ = ["Done", "Injector"]

PRODUCERS = ("producer-a", "producer-b")
GRACEFUL_STOP_SECONDS = 20.0
RESTART_DELAY_SECONDS = 2.0  # as supervisord's startretries backoff would, roughly


@dataclass(frozen=True, slots=True)
class Done:
    """A fault that has been done: when it ended (wall clock, s) and what was done."""

    ended: float
    detail: str


@dataclass(slots=True)
class Injector:
    stack: ChaosStack
    say: Callable[[str], None]
    planted: list[Planted] = field(default_factory=list)
    anomalies: list[str] = field(default_factory=list)
    stopped_on_purpose: set[str] = field(default_factory=set)
    restart_at: dict[str, float] = field(default_factory=dict)  # crashed, restarting then

    def inject(self, fault: Fault) -> Done:
        handler: dict[Kind, Callable[[Fault], str]] = {
            Kind.PRODUCER_KILL: self.producer_kill,
            Kind.CONSUMER_KILL: self.consumer_kill,
            Kind.REDIS_RESTART: self.redis_restart,
            Kind.OPENSEARCH_STOP: self.opensearch_stop,
            Kind.UNAUTHORIZED: self.unauthorized,
            Kind.MZ_DROP: self.mz_drop,
            Kind.COMPACTION: self.compaction,
            Kind.SCALE_UP: self.scale_up,
            Kind.SCALE_DOWN: self.scale_down,
            Kind.PLANT_POISON: self.plant_poison,
        }
        detail = handler[fault.kind](fault)
        return Done(time.time(), detail)

    # -- producers

    def active_producer(self) -> tuple[str, str]:
        """The producer holding the producer lease (``<epoch>:<name>`` at Keys.producer_lease)
        if the product has one and it names a live producer of ours, else the one the run
        started or promoted as active; and how it was told."""
        lease = getattr(Keys(VIEW, PARTITIONS), "producer_lease", None)
        if not isinstance(lease, str):
            return self.stack.active_producer, "no producer lease in common.keys"
        try:
            client = redis.Redis(port=self.stack.redis.port, socket_timeout=2)
            value = client.get(lease)
            client.close()
        except redis.RedisError as error:
            return self.stack.active_producer, f"lease unreadable: {error}"
        if not isinstance(value, bytes):
            return self.stack.active_producer, "nobody holds the producer lease"
        holder = value.decode(errors="replace")
        name = holder.split(":", 1)[-1]
        process = self.stack.producers.get(name)
        if process is None or not process.alive():
            return self.stack.active_producer, f"lease {holder} names no live producer"
        return name, f"lease {holder}"

    def _standby_of(self, name: str) -> str:
        return PRODUCERS[1] if name == PRODUCERS[0] else PRODUCERS[0]

    def producer_kill(self, fault: Fault) -> str:
        victim, evidence = self.active_producer()
        standby = self._standby_of(victim)
        self._kill(self.stack.producers[victim])
        self.stack.active_producer = standby
        time.sleep(fault.down)
        self._restart(self.stack.producers[victim])
        return (
            f"kill -9 {victim} (active: {evidence}), {standby} takes over; {victim} back as standby"
        )

    def compaction(self, fault: Fault) -> str:
        for name in PRODUCERS:
            self._kill(self.stack.producers[name])
        emulator = self.stack.emulator
        assert emulator is not None
        # One more timestamp first: a producer killed right after checkpointing the last
        # tick holds checkpoint = frontier, and compacting to that very tick would leave
        # the AS OF it resumes from valid (seen once: no snapshot, nothing tested).
        emulator.admin("mzemu_tick()")
        since = emulator.admin("mzemu_compact()")
        checkpoint = self._checkpoint()
        time.sleep(fault.down)
        active = self.stack.active_producer
        self._restart(self.stack.producers[active])
        self._restart(self.stack.producers[self._standby_of(active)])
        gone = checkpoint is not None and checkpoint - 1 < since  # resume is AS OF F-1
        return (
            f"kill -9 both producers, mzemu_compact() -> since {since} (checkpoint "
            f"{checkpoint}: {'its history is gone' if gone else 'STILL RESUMABLE'}), "
            "both restarted"
        )

    def _checkpoint(self) -> int | None:
        try:
            client = redis.Redis(port=self.stack.redis.port, socket_timeout=2)
            value = client.get(Keys(VIEW, PARTITIONS).checkpoint)
            client.close()
        except redis.RedisError:
            return None
        return int(value) if isinstance(value, bytes) else None

    # -- consumers

    def consumer_kill(self, fault: Fault) -> str:
        live = self.stack.live_consumers()
        if not live:
            return "no consumer running (nothing to kill)"
        victim = self.stack.consumers[live[fault.victim % len(live)]]
        self._kill(victim)
        time.sleep(fault.down)
        self._restart(victim)
        return f"kill -9 {victim.name} (of {len(live)}), restarted under its name"

    def scale_up(self, fault: Fault) -> str:
        before = len(self.stack.live_consumers())
        while len(self.stack.live_consumers()) < SCALE_UP_TO:
            name = self.stack.free_consumer_name()
            self.stopped_on_purpose.discard(name)
            self.stack.start_consumer(name)
        return f"consumers {before} -> {len(self.stack.live_consumers())}"

    def scale_down(self, fault: Fault) -> str:
        live = self.stack.live_consumers()
        leaving = random.Random(fault.victim).sample(live, max(0, len(live) - SCALE_DOWN_TO))
        for name in leaving:
            self.stopped_on_purpose.add(name)
            self.stack.consumers[name].terminate()
        slow = []
        for name in leaving:
            process = self.stack.consumers[name]
            code = process.wait(GRACEFUL_STOP_SECONDS)
            if code is None:
                slow.append(name)
                self.anomaly(process, f"still running {GRACEFUL_STOP_SECONDS:g}s after SIGTERM")
                process.dump_stacks()  # into its log, for the report
                time.sleep(1)
                process.ensure_dead()
            elif code != 0:
                self.anomaly(process, f"exited with {code} after SIGTERM")
        return f"SIGTERM {', '.join(leaving)}: consumers {len(live)} -> {SCALE_DOWN_TO}" + (
            f" ({', '.join(slow)} had to be killed)" if slow else ""
        )

    # -- services

    def redis_restart(self, fault: Fault) -> str:
        self.stack.redis.shutdown()
        time.sleep(fault.down)
        self.stack.redis.start()  # same port, same directory: the AOF brings the data back
        port = self.stack.redis.port
        return f"redis-server SIGTERM, {fault.down:g}s down, started again on :{port}"

    def opensearch_stop(self, fault: Fault) -> str:
        node, proxy = self.stack.node, self.stack.proxy
        assert node is not None and proxy is not None
        before = proxy.unanswered
        began = time.monotonic()
        if fault.hard:
            node.kill()
        else:
            node.stop()
        time.sleep(max(0.0, fault.down - (time.monotonic() - began)))
        node.start()
        took = node.wait_healthy()
        how = "SIGKILL" if fault.hard else "SIGTERM"
        return (
            f"OpenSearch {how}, {fault.down:g}s down, healthy {took:.1f}s after start "
            f"({proxy.unanswered - before} requests found no node)"
        )

    def unauthorized(self, fault: Fault) -> str:
        proxy = self.stack.proxy
        assert proxy is not None
        before = proxy.refused
        proxy.set_unauthorized(True)
        try:
            time.sleep(fault.down)
        finally:
            proxy.set_unauthorized(False)
        return f"401 for {fault.down:g}s ({proxy.refused - before} requests refused)"

    def mz_drop(self, fault: Fault) -> str:
        assert self.stack.emulator is not None
        dropped = self.stack.emulator.admin("mzemu_drop_connections()")
        return f"mzemu_drop_connections() dropped {dropped} connections"

    def plant_poison(self, fault: Fault) -> str:
        client = redis.Redis(port=self.stack.redis.port, socket_timeout=5)
        try:
            self.planted = plant(client, Keys(VIEW, PARTITIONS), random.Random(fault.victim))
        finally:
            client.close()
        return "planted " + "; ".join(p.describe() for p in self.planted)

    # -- process bookkeeping

    def _kill(self, process: ManagedProcess) -> None:
        self.stopped_on_purpose.add(process.name)
        process.kill()

    def _restart(self, process: ManagedProcess) -> None:
        self.stopped_on_purpose.discard(process.name)
        process.start()

    def anomaly(self, process: ManagedProcess, what: str) -> None:
        last = process.log_tail(3).replace("\n", " | ")
        message = f"{process.name} {what}; log ({process.log_path.name}) ends: {last}"
        self.anomalies.append(message)
        self.say(f"ANOMALY: {message}")

    def watchdog(self) -> None:
        """Record any producer or consumer that died on its own, and restart it after
        RESTART_DELAY_SECONDS (a process that exits at once is not restarted in a loop)."""
        now = time.monotonic()
        for process in [*self.stack.producers.values(), *self.stack.consumers.values()]:
            if process.name in self.stopped_on_purpose or process.alive():
                self.restart_at.pop(process.name, None)
                continue
            due = self.restart_at.get(process.name)
            if due is None:
                self.anomaly(process, f"exited on its own with status {process.returncode()}")
                self.restart_at[process.name] = now + RESTART_DELAY_SECONDS
            elif now >= due:
                del self.restart_at[process.name]
                process.start()
