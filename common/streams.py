"""Stream setup shared by producer, consumers and the CLI."""

from __future__ import annotations

from redis.asyncio import Redis
from redis.exceptions import ResponseError

from .keys import Keys

__all__ = ["LUA_LAST_DELIVERED", "ensure_groups"]

# Lua, for the scripts that act on a group atomically (consumer.replay, cli.purge):
# last_delivered(groups, group) is the last-delivered-id of ``group`` in an XINFO GROUPS
# reply, nil when the stream has no such group.
LUA_LAST_DELIVERED = """
local function last_delivered(groups, group)
  for _, g in ipairs(groups) do
    local name, lid
    for i = 1, #g, 2 do
      if g[i] == 'name' then name = g[i + 1] end
      if g[i] == 'last-delivered-id' then lid = g[i + 1] end
    end
    if name == group then return lid end
  end
  return nil
end
"""


async def ensure_groups(redis: Redis, keys: Keys, group: str) -> None:
    """Create ``group`` on every partition stream, from the stream's first entry.

    Idempotent. The group starts at id ``0`` (not ``$``) so that entries a
    producer wrote before any consumer existed are still delivered.
    Raises redis.exceptions.ConnectionError when Redis is unreachable.
    """
    async with redis.pipeline(transaction=False) as pipe:
        for stream in keys.streams():
            pipe.xgroup_create(stream, group, id="0", mkstream=True)
        results = await pipe.execute(raise_on_error=False)
    for result in results:
        if isinstance(result, ResponseError) and "BUSYGROUP" not in str(result):
            raise result
        if isinstance(result, Exception) and not isinstance(result, ResponseError):
            raise result
