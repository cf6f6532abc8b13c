"""A Redis connection whose writes let a cancellation through, on Python 3.11.

redis-py bounds each write by `socket_timeout` with `asyncio.wait_for`. On
Python 3.11, `wait_for` swallows a cancellation that arrives as the awaited
write completes (CPython gh-86296; 3.12 rebuilt `wait_for` on
`asyncio.timeout`): the cancelled task goes on as if it had not been. The
fan-out's channel-layer receive then blocks in BZPOPMIN again and again, and
an event loop that cancels its tasks before closing (uvicorn's shutdown,
`asyncio.run`, a test's `async_to_sync`) waits for it forever. `wait_for` also
makes a task per command.

This connection writes under `asyncio.timeout` instead, which tells a
cancellation from its own timeout. It is used for redis:// URLs (the layer's
hosts in chatsite.settings, and chat.sharedstate's clients); rediss:// and
unix:// URLs get redis-py's classes, as the URL names them.
"""

import asyncio

from redis import asyncio as aioredis
from redis.exceptions import TimeoutError as RedisTimeoutError


class Connection(aioredis.Connection):
    async def send_packed_command(self, command, check_health: bool = True) -> None:
        timeout = self.socket_timeout
        if not timeout:
            return await super().send_packed_command(command, check_health)
        try:
            async with asyncio.timeout(timeout):
                # Without a socket_timeout, redis-py writes without wait_for.
                # The connection is this command's alone until it is done.
                self.socket_timeout = None
                try:
                    await super().send_packed_command(command, check_health)
                finally:
                    self.socket_timeout = timeout
        except TimeoutError:  # asyncio's, from the block above
            await self.disconnect(nowait=True)
            raise RedisTimeoutError("Timeout writing to socket") from None
