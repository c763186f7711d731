"""Every Redis key searchsync uses, in one place.

All keys of one view share the prefix ``searchsync:<view>:``. No command touches
two partitions' keys at once, so the layout stays usable on Redis Cluster.
"""

from __future__ import annotations

from typing import Final

__all__ = ["HIGH_WATER_MEMBER", "RECONCILE_DONE", "RECONCILE_PENDING", "Keys"]

# The values of the ``reconcile`` hash (field: a snapshot's ts): written "pending" by
# the producer with the reconcile marker, set "done" by the consumer that deleted the
# documents older than the snapshot (consumer.reconcile).
RECONCILE_PENDING: Final = b"pending"
RECONCILE_DONE: Final = b"done"
# The one member of the ``high_water`` sorted set; its score is the mark
# (raised by producer.writer, read by consumer.highwater).
HIGH_WATER_MEMBER: Final = b"ts"


class Keys:
    """Key names for one view; cheap to build, holds no connection."""

    __slots__ = (
        "applied",
        "checkpoint",
        "counts",
        "dlq",
        "high_water",
        "members",
        "meta",
        "partitions",
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
    )

    def __init__(self, view: str, partitions: int) -> None:
        self.prefix = f"searchsync:{view}:"
        self.partitions = partitions
        # last complete frontier F written by the producer: every change below F is in a stream
        self.checkpoint = self.prefix + "checkpoint"
        # dead-letter stream: one entry per rejected change, with its reason
        self.dlq = self.prefix + "dlq"
        # consumer heartbeats: sorted set, member = consumer name, score = last beat (ms)
        self.members = self.prefix + "members"
        # hash p<N> -> frontier applied to OpenSearch (every change below it is indexed)
        self.applied = self.prefix + "applied"
        # hash snapshot ts -> RECONCILE_PENDING | RECONCILE_DONE: deletes of documents older than a
        # snapshot that replaced lost history (written by the producer, run by one consumer)
        self.reconcile = self.prefix + "reconcile"
        self.reconcile_lock = self.prefix + "reconcile:lock"
        # hash written:p<N> / acked:p<N> -> changes (not entries) ever written / acknowledged;
        # their difference is the buffer the runbook's backpressure counts (common.buffer)
        self.counts = self.prefix + "counts"
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
        """The stream of partition ``partition``: ``searchsync:<view>:p<N>``."""
        return f"{self.prefix}p{partition}"

    def lease(self, partition: int) -> str:
        """The lease of partition ``partition``: ``searchsync:<view>:lease:p<N>``."""
        return f"{self.prefix}lease:p{partition}"

    def attempts(self, partition: int) -> str:
        """Hash entry id -> bulk attempts of partition ``partition``'s pending entries:
        ``searchsync:<view>:attempts:p<N>`` (consumer.attempts)."""
        return f"{self.prefix}attempts:p{partition}"

    def blocked(self, partition: int) -> str:
        """Why partition ``partition`` cannot be written (auth, missing alias …), with a
        TTL while a consumer keeps retrying: ``searchsync:<view>:blocked:p<N>``."""
        return f"{self.prefix}blocked:p{partition}"

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
        """The field used for a partition in hashes such as ``applied``: ``p<N>``."""
        return f"p{partition}"
