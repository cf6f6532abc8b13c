"""channels-redis, made to ride out a Redis outage instead of dropping sockets.

Plain channels-redis raises from `receive` when Redis goes away, which ends
every consumer of the process: every socket closes at once, and reconnecting
fails until Redis is back. This layer keeps the sockets: `receive` waits for
Redis with backoff, then hands the consumer one `layer.recovered` event, on
which the consumer subscribes again (Redis may have restarted empty) and
sends what it missed from the database.
"""

import asyncio
import logging

from channels_redis.core import RedisChannelLayer
from redis.exceptions import RedisError

logger = logging.getLogger(__name__)

RECOVERED = {"type": "layer.recovered"}
BACKOFF_FIRST, BACKOFF_MAX = 0.05, 2.0


class ResilientRedisChannelLayer(RedisChannelLayer):
    async def receive(self, channel: str) -> dict:
        try:
            return await super().receive(channel)
        except (RedisError, OSError):
            logger.warning("channel layer lost Redis; waiting for it", exc_info=True)
        delay = BACKOFF_FIRST
        while True:
            await asyncio.sleep(delay)
            if await self._reachable(channel):
                logger.info("channel layer has Redis again")
                return dict(RECOVERED)
            delay = min(delay * 2, BACKOFF_MAX)

    async def _reachable(self, channel: str) -> bool:
        index = self.consistent_hash(self.non_local_name(channel))
        try:
            connection = self.connection(index)
            await connection.ping()
        except (RedisError, OSError):
            return False
        return True
