"""How many sockets one user may hold open, counted across every server process.

A socket holds a seat from its handshake to its close; a user with
MAX_SOCKETS_PER_USER seats taken gets no more (another tab, a runaway bot
reconnecting in a loop). Seats expire after PRESENCE_TTL unless the process's
heartbeat (chat.heartbeat) renews them, so the seats of a process that died without closing
its sockets come free by themselves.

With REDIS_URL the seats live in Redis (a sorted set per user scored by
expiry, taken by one atomic script), else in this one process's memory.
"""

import logging
import time

from django.conf import settings
from redis.exceptions import RedisError

from chat.sharedstate import client_script, loop_client, shared_store

logger = logging.getLogger(__name__)


class LocalSeats:
    def __init__(self) -> None:
        self.users: dict[int, dict[str, float]] = {}

    def _live(self, user_id: int) -> dict[str, float]:
        seats = self.users.setdefault(user_id, {})
        now = time.monotonic()
        for channel in [c for c, expires in seats.items() if expires <= now]:
            del seats[channel]
        return seats

    async def take(self, user_id: int, channel: str) -> bool:
        seats = self._live(user_id)
        if channel not in seats and len(seats) >= settings.MAX_SOCKETS_PER_USER:
            return False
        seats[channel] = time.monotonic() + settings.PRESENCE_TTL
        return True

    async def renew_many(self, seats: list[tuple[int, str]]) -> None:
        expires = time.monotonic() + settings.PRESENCE_TTL
        for user_id, channel in seats:
            self._live(user_id)[channel] = expires

    async def release(self, user_id: int, channel: str) -> None:
        self._live(user_id).pop(channel, None)


# KEYS[1] the user's seats; ARGV: channel, limit, ttl (s). Returns 1 if seated.
# Redis's own clock, so that processes on several machines agree.
TAKE_SCRIPT = """
local clock = redis.call('TIME')
local now = tonumber(clock[1]) + tonumber(clock[2]) / 1000000
local ttl = tonumber(ARGV[3])
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', now)
if not redis.call('ZSCORE', KEYS[1], ARGV[1])
    and redis.call('ZCARD', KEYS[1]) >= tonumber(ARGV[2]) then
  return 0
end
redis.call('ZADD', KEYS[1], now + ttl, ARGV[1])
redis.call('EXPIRE', KEYS[1], math.ceil(ttl))
return 1
"""


# Seats renewed per pipeline: each is packed and parsed on the event loop at
# once; between pipelines the loop serves the sockets.
RENEW_BATCH = 100


class RedisSeats:
    # The limit is a guard, not a promise: with Redis down, sockets are let in.

    def __init__(self, url: str, prefix: str) -> None:
        self.url = url
        self.prefix = prefix

    def _key(self, user_id: int) -> str:
        return f"{self.prefix}:sockets:{user_id}"

    async def take(self, user_id: int, channel: str) -> bool:
        script = client_script(loop_client(self.url), TAKE_SCRIPT)
        try:
            seated = await script(
                keys=[self._key(user_id)],
                args=[channel, settings.MAX_SOCKETS_PER_USER, settings.PRESENCE_TTL],
            )
        except RedisError:
            logger.warning("socket limit unavailable; allowing", exc_info=True)
            return True
        return bool(seated)

    async def renew_many(self, seats: list[tuple[int, str]]) -> None:
        """Renew these (user id, channel) seats, a pipelined round trip per RENEW_BATCH."""
        client = loop_client(self.url)
        script = client_script(client, TAKE_SCRIPT)
        for start in range(0, len(seats), RENEW_BATCH):
            try:
                async with client.pipeline(transaction=False) as pipe:
                    for user_id, channel in seats[start : start + RENEW_BATCH]:
                        # Taking a seat already held renews it.
                        await script(
                            keys=[self._key(user_id)],
                            args=[channel, settings.MAX_SOCKETS_PER_USER, settings.PRESENCE_TTL],
                            client=pipe,
                        )
                    await pipe.execute()
            except RedisError:
                logger.warning("socket limit unavailable; seats not renewed", exc_info=True)

    async def release(self, user_id: int, channel: str) -> None:
        try:
            await loop_client(self.url).zrem(self._key(user_id), channel)
        except RedisError:
            logger.warning("socket limit unavailable; the seat expires", exc_info=True)


def get_seats() -> LocalSeats | RedisSeats:
    return shared_store("socket_seats", redis=RedisSeats, local=LocalSeats)
