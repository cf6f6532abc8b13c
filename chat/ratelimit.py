"""The per-user send rate limit of the socket: a token bucket shared by every process.

Each user has a bucket of SEND_BURST tokens refilled at SEND_RATE per second;
a message takes one. With REDIS_URL the bucket lives in Redis (one atomic
script per send), so a user with sockets on several processes gets one
budget, not one per process. Without Redis there is one process: a dict.
"""

import logging
import math
import time
from dataclasses import dataclass

from django.conf import settings
from redis.exceptions import RedisError

from chat.sharedstate import client_script, loop_client, shared_store

logger = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class Verdict:
    allowed: bool
    retry_after: float  # seconds until a token is back (0 when allowed)


def _refill(tokens: float, stamp: float, now: float, rate: float, burst: float) -> float:
    return min(burst, tokens + (now - stamp) * rate)


@dataclass(slots=True)
class TokenBucket:
    """One bucket in this process's memory (for what belongs to one socket)."""

    rate: float
    burst: float
    tokens: float = -1.0  # full at the first take
    stamp: float = 0.0

    def take(self) -> bool:
        now = time.monotonic()
        if self.tokens < 0:
            self.tokens, self.stamp = self.burst, now
        self.tokens = _refill(self.tokens, self.stamp, now, self.rate, self.burst)
        self.stamp = now
        if self.tokens < 1:
            return False
        self.tokens -= 1
        return True


class LocalBuckets:
    def __init__(self) -> None:
        self.buckets: dict[int, tuple[float, float]] = {}

    async def take(self, user_id: int) -> Verdict:
        rate, burst, now = settings.SEND_RATE, settings.SEND_BURST, time.monotonic()
        tokens, stamp = self.buckets.get(user_id, (burst, now))
        tokens = _refill(tokens, stamp, now, rate, burst)
        if tokens < 1:
            self.buckets[user_id] = (tokens, now)
            return Verdict(False, (1 - tokens) / rate)
        self.buckets[user_id] = (tokens - 1, now)
        return Verdict(True, 0.0)


# KEYS[1] bucket; ARGV: rate, burst, ttl (s). Returns {allowed, retry_after_ms}.
# The time is Redis's own, so processes on several machines agree on it.
TAKE_SCRIPT = """
local rate, burst = tonumber(ARGV[1]), tonumber(ARGV[2])
local clock = redis.call('TIME')
local now = tonumber(clock[1]) + tonumber(clock[2]) / 1000000
local state = redis.call('HMGET', KEYS[1], 'tokens', 'stamp')
local tokens = tonumber(state[1]) or burst
local stamp = tonumber(state[2]) or now
tokens = math.min(burst, tokens + math.max(0, now - stamp) * rate)
local allowed = 0
if tokens >= 1 then
  tokens = tokens - 1
  allowed = 1
end
redis.call('HSET', KEYS[1], 'tokens', tokens, 'stamp', now)
redis.call('EXPIRE', KEYS[1], ARGV[3])
if allowed == 1 then return {1, 0} end
return {0, math.ceil((1 - tokens) / rate * 1000)}
"""


class RedisBuckets:
    def __init__(self, url: str, prefix: str) -> None:
        self.url = url
        self.prefix = prefix

    def _script(self):
        return client_script(loop_client(self.url), TAKE_SCRIPT)

    async def take(self, user_id: int) -> Verdict:
        rate, burst = settings.SEND_RATE, settings.SEND_BURST
        ttl = math.ceil(burst / rate) + 1  # a full bucket needs no key
        try:
            allowed, retry_ms = await self._script()(
                keys=[f"{self.prefix}:sendrate:{user_id}"], args=[rate, burst, ttl]
            )
        except RedisError:
            # Open, not shut: with Redis down, messages must still be stored.
            logger.warning("send rate limit unavailable; allowing", exc_info=True)
            return Verdict(True, 0.0)
        return Verdict(bool(allowed), retry_ms / 1000)


def get_send_buckets() -> LocalBuckets | RedisBuckets:
    return shared_store("send_buckets", redis=RedisBuckets, local=LocalBuckets)
