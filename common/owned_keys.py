"""Keys owned by one holder (leases, locks): renewed and released only by their holder.

The consumers' partition leases (consumer.leases), the producer lease
(producer.lease) and the reconcile lock (consumer.reconcile) are each a string key
whose value names the holder and whose TTL ends an abandoned hold. Renewing or
releasing one must never touch a hold that has passed to someone else, so both
are a compare-and-act script. Each touches one key: fine on Redis Cluster.
"""

from __future__ import annotations

from typing import Final

__all__ = ["RELEASE", "RENEW"]

#: KEYS[1] the key; ARGV[1] the holder's value, ARGV[2] TTL ms. 1 if extended, 0 if not ours.
RENEW: Final = """
if redis.call('GET', KEYS[1]) == ARGV[1] then
  return redis.call('PEXPIRE', KEYS[1], ARGV[2])
end
return 0
"""

#: KEYS[1] the key; ARGV[1] the holder's value. 1 if deleted, 0 if not ours.
RELEASE: Final = """
if redis.call('GET', KEYS[1]) == ARGV[1] then
  return redis.call('DEL', KEYS[1])
end
return 0
"""
