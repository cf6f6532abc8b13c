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
import weakref

from django.conf import settings
from redis.exceptions import RedisError

from chat.batching import Batch
from chat.sharedstate import client_script, loop_client, per_loop, shared_store

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


# KEYS: each seat's user's key; ARGV: limit, ttl (s), then each seat's
# channel in the order of KEYS. Returns 1 (seated) or 0 for each seat, in
# order; taking a seat already held renews it. Redis's own clock, so that
# processes on several machines agree.
TAKE_SCRIPT = """
local clock = redis.call('TIME')
local now = tonumber(clock[1]) + tonumber(clock[2]) / 1000000
local limit, ttl = tonumber(ARGV[1]), tonumber(ARGV[2])
local seated = {}
for i, key in ipairs(KEYS) do
  local channel = ARGV[i + 2]
  redis.call('ZREMRANGEBYSCORE', key, '-inf', now)
  if not redis.call('ZSCORE', key, channel) and redis.call('ZCARD', key) >= limit then
    seated[i] = 0
  else
    redis.call('ZADD', key, now + ttl, channel)
    redis.call('EXPIRE', key, math.ceil(ttl))
    seated[i] = 1
  end
end
return seated
"""
# KEYS: each seat's user's key; ARGV: each seat's channel.
RELEASE_SCRIPT = """
for i, key in ipairs(KEYS) do
  redis.call('ZREM', key, ARGV[i])
end
return 0
"""

# Seats renewed per script call: each call is packed and parsed on the event
# loop at once; between calls the loop serves the sockets.
RENEW_BATCH = 100

Seat = tuple[int, str]  # (user id, channel)


class RedisSeats:
    """The limit is a guard, not a promise: with Redis down, sockets are let in.

    Seats are taken and released in batches (chat.batching): in a reconnect
    storm a script call per socket, each a round trip, was a sixth of the
    process's CPU (docs/performance.md).
    """

    def __init__(self, url: str, prefix: str) -> None:
        self.url = url
        self.prefix = prefix
        # A batch per event loop (one per process in production).
        self._takes: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()
        self._releases: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()

    def _key(self, user_id: int) -> str:
        return f"{self.prefix}:sockets:{user_id}"

    async def take(self, user_id: int, channel: str) -> bool:
        takes = per_loop(self._takes, lambda: Batch(self._take_many))
        try:
            seated = await takes.get((user_id, channel))
        except RedisError:
            logger.warning("socket limit unavailable; allowing", exc_info=True)
            return True
        return bool(seated)

    async def renew_many(self, seats: list[Seat]) -> None:
        """Renew these seats, a script call per RENEW_BATCH."""
        for start in range(0, len(seats), RENEW_BATCH):
            try:
                await self._take_many(seats[start : start + RENEW_BATCH])
            except RedisError:
                logger.warning("socket limit unavailable; seats not renewed", exc_info=True)

    async def release(self, user_id: int, channel: str) -> None:
        releases = per_loop(self._releases, lambda: Batch(self._release_many))
        try:
            await releases.get((user_id, channel))
        except RedisError:
            logger.warning("socket limit unavailable; the seat expires", exc_info=True)

    async def _take_many(self, seats: list[Seat]) -> dict[Seat, int]:
        script = client_script(loop_client(self.url), TAKE_SCRIPT)
        seated = await script(
            keys=[self._key(user_id) for user_id, _ in seats],
            args=[
                settings.MAX_SOCKETS_PER_USER,
                settings.PRESENCE_TTL,
                *(channel for _, channel in seats),
            ],
        )
        return dict(zip(seats, seated, strict=True))

    async def _release_many(self, seats: list[Seat]) -> dict:
        script = client_script(loop_client(self.url), RELEASE_SCRIPT)
        await script(
            keys=[self._key(user_id) for user_id, _ in seats],
            args=[channel for _, channel in seats],
        )
        return {}


def get_seats() -> LocalSeats | RedisSeats:
    return shared_store("socket_seats", redis=RedisSeats, local=LocalSeats)
