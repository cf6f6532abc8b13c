"""The per-user send rate limit of the socket: a token bucket shared by every process.

Each user has a bucket of SEND_BURST tokens refilled at SEND_RATE per second;
a message takes one. With REDIS_URL the bucket lives in Redis (one atomic
script per round of posts), so a user with sockets on several processes gets
one budget, not one per process. Without Redis there is one process: a dict.

Tokens are taken in the database thread, just before the posts they guard
are stored (chat.posting): from the event loop, a busy loop read Redis's
answer late, and every post of the round waited for it.
"""

import logging
import math
import time
from dataclasses import dataclass

from django.conf import settings
from redis.exceptions import RedisError

from chat.sharedstate import shared_store, thread_client

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

    def take_many(self, user_ids: list[int]) -> list[Verdict]:
        """A token from each user's bucket, in order (a user twice takes two).
        From one thread at a time (the database thread)."""
        return [self._take(user_id) for user_id in user_ids]

    def _take(self, user_id: int) -> Verdict:
        rate, burst, now = settings.SEND_RATE, settings.SEND_BURST, time.monotonic()
        tokens, stamp = self.buckets.get(user_id, (burst, now))
        tokens = _refill(tokens, stamp, now, rate, burst)
        if tokens < 1:
            self.buckets[user_id] = (tokens, now)
            return Verdict(False, (1 - tokens) / rate)
        self.buckets[user_id] = (tokens - 1, now)
        return Verdict(True, 0.0)


# KEYS: buckets, one per take (a bucket twice takes twice). ARGV: rate, burst,
# ttl (s). Returns {allowed, retry_after_ms} for each key, flat. The time is
# Redis's own, so processes on several machines agree on it.
TAKE_SCRIPT = """
local rate, burst = tonumber(ARGV[1]), tonumber(ARGV[2])
local clock = redis.call('TIME')
local now = tonumber(clock[1]) + tonumber(clock[2]) / 1000000
local verdicts = {}
for _, key in ipairs(KEYS) do
  local state = redis.call('HMGET', key, 'tokens', 'stamp')
  local tokens = tonumber(state[1]) or burst
  local stamp = tonumber(state[2]) or now
  tokens = math.min(burst, tokens + math.max(0, now - stamp) * rate)
  local allowed = 0
  if tokens >= 1 then
    tokens = tokens - 1
    allowed = 1
  end
  redis.call('HSET', key, 'tokens', tokens, 'stamp', now)
  redis.call('EXPIRE', key, ARGV[3])
  verdicts[#verdicts + 1] = allowed
  verdicts[#verdicts + 1] = allowed == 1 and 0 or math.ceil((1 - tokens) / rate * 1000)
end
return verdicts
"""


class RedisBuckets:
    def __init__(self, url: str, prefix: str) -> None:
        self.prefix = prefix
        # redis-py's blocking Script: EVALSHA, loaded again if Redis forgot it.
        self.script = thread_client(url).register_script(TAKE_SCRIPT)

    def take_many(self, user_ids: list[int]) -> list[Verdict]:
        """A token from each user's bucket, in order, in one script call (a
        round of posts, chat.posting). Blocking: for the database thread."""
        rate, burst = settings.SEND_RATE, settings.SEND_BURST
        ttl = math.ceil(burst / rate) + 1  # a full bucket needs no key
        try:
            verdicts = self.script(
                keys=[f"{self.prefix}:sendrate:{user_id}" for user_id in user_ids],
                args=[rate, burst, ttl],
            )
        except RedisError:
            # Open, not shut: with Redis down, messages must still be stored.
            logger.warning("send rate limit unavailable; allowing", exc_info=True)
            return [Verdict(True, 0.0)] * len(user_ids)
        return [
            Verdict(bool(verdicts[2 * i]), verdicts[2 * i + 1] / 1000) for i in range(len(user_ids))
        ]


def get_send_buckets() -> LocalBuckets | RedisBuckets:
    return shared_store("send_buckets", redis=RedisBuckets, local=LocalBuckets)
