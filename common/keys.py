"""Every Redis key searchsync uses, in one place: key layout 2.

Keys carry Redis Cluster hash tags (the part in braces decides the slot), so that
every command and every script touches keys of one slot only, on one Redis as on a
cluster:

* view-wide keys share the tag ``{<view>}``: ``searchsync:{<view>}:checkpoint``,
  ``…:producer``, ``…:meta`` … The fenced checkpoint script reads the producer lease
  and writes the checkpoint; the producer's acquire script reads the lease and
  increments the epoch: both pairs are view-wide, so each script stays in one slot.
* every key of partition N shares the tag ``{<view>:p<N>}``: its stream
  ``searchsync:{<view>:p<N>}``, and ``…:lease``, ``…:applied``, ``…:counts``,
  ``…:attempts``, ``…:blocked``. The consumer's fence script (lease + attempts) and
  the replay's move script (stream + counts) stay in one slot, and partitions spread
  over the cluster's nodes.

Layout 1 (``searchsync:<view>:p<N>``, one ``applied`` and one ``counts`` hash for the
whole view) is refused at start by common.meta, which names the migration.
"""

from __future__ import annotations

from typing import Final

__all__ = [
    "HIGH_WATER_MEMBER",
    "RECONCILE_DONE",
    "RECONCILE_PENDING",
    "SNAPSHOT_FLOOR_MEMBER",
    "Keys",
]

# The values of the ``reconcile`` hash (field: a snapshot's ts): written "pending" by
# the producer with the reconcile marker, set "done" by the consumer that deleted the
# documents older than the snapshot (consumer.reconcile).
RECONCILE_PENDING: Final = b"pending"
RECONCILE_DONE: Final = b"done"
# The one member of the ``high_water`` sorted set; its score is the mark
# (raised by producer.writer, read by consumer.highwater).
HIGH_WATER_MEMBER: Final = b"ts"
# The one member of a partition's ``floor`` sorted set; its score is the floor
# (raised by consumer.acks with the reconcile marker's XACK, read by consumer.runner).
SNAPSHOT_FLOOR_MEMBER: Final = b"ts"


class Keys:
    """Key names for one view; cheap to build, holds no connection."""

    __slots__ = (
        "checkpoint",
        "dlq",
        "high_water",
        "members",
        "meta",
        "partitions",
        "pattern",
        "poll_digests",
        "poll_keys",
        "prefix",
        "producer_epoch",
        "producer_lease",
        "reconcile",
        "reconcile_lock",
        "resync",
        "resync_confirmed",
        "resync_lock",
        "retired",
        "view",
    )

    def __init__(self, view: str, partitions: int) -> None:
        self.view = view
        # the view-wide keys' prefix (one slot); partitions' keys start searchsync:{<view>:p
        self.prefix = f"searchsync:{{{view}}}:"
        # a SCAN pattern matching every key of this view, view-wide and per partition
        # (not another view whose name starts with this one's)
        self.pattern = f"searchsync:{{{view}[:}}]*"
        self.partitions = partitions
        # last complete frontier F written by the producer: every change below F is in a stream
        self.checkpoint = self.prefix + "checkpoint"
        # dead-letter stream: one entry per rejected change, with its reason
        self.dlq = self.prefix + "dlq"
        # consumer heartbeats: sorted set, member = consumer name, score = last beat (ms)
        self.members = self.prefix + "members"
        # hash snapshot ts -> RECONCILE_PENDING | RECONCILE_DONE: deletes of documents older than a
        # snapshot that replaced lost history (written by the producer, run by one consumer)
        self.reconcile = self.prefix + "reconcile"
        self.reconcile_lock = self.prefix + "reconcile:lock"
        # set of keys present in the view, kept by the polling fallback to detect deletes
        # (before it compared rows by content; deleted on start by both modes)
        self.poll_keys = self.prefix + "poll:keys"
        # hash key -> 8-byte digest of the key's row(s): the polling fallback's view of
        # what is indexed, so a change of any column and any deletion is found
        self.poll_digests = self.prefix + "poll:digests"
        # hash: the stream layout (layout version, partitions, view, key column), written
        # once when the streams are created; producer and consumers refuse a mismatch
        self.meta = self.prefix + "meta"
        # the active producer's lease: "<epoch>:<name>", PX = LEASE_TTL; a standby waits
        self.producer_lease = self.prefix + "producer"
        # counter of producer lease acquisitions: the fencing token's epoch
        self.producer_epoch = self.prefix + "producer:epoch"
        # the highest ts any entry may carry: raised by the producer before it writes an
        # entry above it; consumers dead-letter entries above it (hand-written garbage)
        self.high_water = self.prefix + "high_water"
        # hash: the resync in progress (common.resync: id, phase, target and old index …);
        # while its phase is a dual-write one, consumers write every bulk to both indexes
        self.resync = self.prefix + "resync"
        # hash consumer name -> resync id: that consumer dual-writes every bulk it sends
        self.resync_confirmed = self.prefix + "resync:confirmed"
        # "<host>:<pid>" of the searchsync resync command running it, PX a few seconds,
        # renewed every second: a second command waits for it or refuses
        self.resync_lock = self.prefix + "resync:lock"
        # sorted set index name -> delete-after (ms): indexes a resync swapped out,
        # deleted by consumers once the grace period is over (never one behind the alias)
        self.retired = self.prefix + "retired"

    def stream(self, partition: int) -> str:
        """The stream of partition ``partition``: ``searchsync:{<view>:p<N>}``; every other
        key of the partition is this name plus a suffix (one hash slot)."""
        return f"searchsync:{{{self.view}:p{partition}}}"

    def lease(self, partition: int) -> str:
        """The lease of partition ``partition``: ``searchsync:{<view>:p<N>}:lease``."""
        return self.stream(partition) + ":lease"

    def applied(self, partition: int) -> str:
        """String: the frontier applied to OpenSearch for ``partition`` (every change of it
        below is indexed): ``searchsync:{<view>:p<N>}:applied`` (consumer.acks)."""
        return self.stream(partition) + ":applied"

    def snapshot_floor(self, partition: int) -> str:
        """Sorted set, one member (:data:`SNAPSHOT_FLOOR_MEMBER`) scored with the highest
        reconcile marker ts ``partition`` has acknowledged (raised with ``ZADD GT``): every
        change of it below is superseded by that snapshot and settled without being sent
        (consumer.batch): ``searchsync:{<view>:p<N>}:floor``."""
        return self.stream(partition) + ":floor"

    def counts(self, partition: int) -> str:
        """Hash ``written:p<N>`` / ``acked:p<N>`` -> changes (not entries) of ``partition``
        ever written / acknowledged: ``searchsync:{<view>:p<N>}:counts``. Their difference
        is the buffer backpressure counts (common.buffer); the fields keep the partition in
        their name so the hashes of all partitions merge into one mapping."""
        return self.stream(partition) + ":counts"

    def attempts(self, partition: int) -> str:
        """Hash entry id -> bulk attempts of partition ``partition``'s pending entries:
        ``searchsync:{<view>:p<N>}:attempts`` (consumer.attempts)."""
        return self.stream(partition) + ":attempts"

    def blocked(self, partition: int) -> str:
        """Why partition ``partition`` cannot be written (auth, missing alias …), with a
        TTL while a consumer keeps retrying: ``searchsync:{<view>:p<N>}:blocked``."""
        return self.stream(partition) + ":blocked"

    def streams(self) -> list[str]:
        return [self.stream(n) for n in range(self.partitions)]

    @staticmethod
    def written_field(partition: int) -> str:
        return f"written:p{partition}"

    @staticmethod
    def acked_field(partition: int) -> str:
        return f"acked:p{partition}"

    @staticmethod
    def partition_name(partition: int) -> str:
        """A partition's name in reports and merged readings: ``p<N>``."""
        return f"p{partition}"
