"""channels-redis, made to ride out a Redis outage instead of dropping sockets.

Plain channels-redis raises from `receive` when Redis goes away, which ends
every consumer of the process: every socket closes at once, and reconnecting
fails until Redis is back. This layer keeps the sockets: a failed `receive`
waits for Redis (with backoff), and then every receiver of the process, failed
or still waiting, gets one `layer.recovered` event, on which it subscribes
again (Redis may have restarted empty) and sends what it missed from the
database (chat.fanout, chat.consumers).
"""

import asyncio
import logging

from channels_redis.core import RedisChannelLayer
from redis.exceptions import RedisError

logger = logging.getLogger(__name__)

RECOVERED = {"type": "layer.recovered"}
BACKOFF_FIRST, BACKOFF_MAX = 0.05, 2.0


class ResilientRedisChannelLayer(RedisChannelLayer):
    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self._recovery: asyncio.Future | None = None

    async def receive(self, channel: str) -> dict:
        try:
            return await super().receive(channel)
        except (RedisError, OSError):
            logger.warning("channel layer lost Redis; waiting for it", exc_info=True)
        # One wait per outage, however many receivers failed.
        if self._recovery is None or self._recovery.done():
            self._recovery = asyncio.ensure_future(self._wait_for_redis(channel))
        await asyncio.shield(self._recovery)
        return dict(RECOVERED)

    async def _wait_for_redis(self, channel: str) -> None:
        delay = BACKOFF_FIRST
        while not await self._reachable(channel):
            await asyncio.sleep(delay)
            delay = min(delay * 2, BACKOFF_MAX)
        logger.info("channel layer has Redis again")
        # The receivers that did not fail (they were waiting for the one that
        # did) lost their subscriptions all the same: wake each of them. (A
        # failed receiver's buffer is gone; it gets RECOVERED from receive.)
        for queue in list(self.receive_buffer.values()):
            queue.put_nowait(dict(RECOVERED))

    async def _reachable(self, channel: str) -> bool:
        index = self.consistent_hash(self.non_local_name(channel))
        try:
            await self.connection(index).ping()
        except (RedisError, OSError):
            return False
        return True
