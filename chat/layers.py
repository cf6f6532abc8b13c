"""channels-redis, made to ride out a Redis outage instead of dropping sockets.

Plain channels-redis raises from `receive` when Redis goes away, which ends
every consumer of the process: every socket closes at once, and reconnecting
fails until Redis is back. This layer keeps the sockets: a failed `receive`
waits for Redis (with backoff), and then every receiver of the process, failed
or still waiting, gets one `layer.recovered` event, on which it subscribes
again (Redis may have restarted empty) and sends what it missed from the
database (chat.fanout, chat.consumers).

It also talks to Redis less, keeping channels-redis's data model, so that
processes of either kind can share a Redis:

- `group_send` is one script: channels-redis makes four round trips (drop
  expired members, read the members, drop expired messages, push), with the
  push script's whole text sent each time. It pushes nothing to the channel
  a message names as its ORIGIN: that process has delivered it to its own
  sockets already (chat.fanout), and would only pop it again.
  `group_send_many` sends several messages, to one group each, in one call
  of that script (chat.events: the room events of a turn of the event loop).
- A receive on a process's own channel (the fan-out's) waits for a message
  and pops what has piled up in one round trip (BZMPOP, Redis 7; two round
  trips before that), and hands them out one by one; channels-redis makes
  four per message (restore its backup queue, pop, back up, clean the
  backup).
  The backup only matters to a receive cancelled between the pop and the
  hand-over; here the popped messages wait in the layer for the next receive
  instead, and a process that dies loses them as it loses whatever its
  sockets had not yet been sent.

Measured in docs/performance.md.
"""

import asyncio
import collections
import logging
import random
import time

import msgpack
from channels_redis.core import RedisChannelLayer
from channels_redis.serializers import MsgPackSerializer
from redis.exceptions import RedisError, ResponseError

from chat.sharedstate import client_script

logger = logging.getLogger(__name__)

RECOVERED = {"type": "layer.recovered"}
BACKOFF_FIRST, BACKOFF_MAX = 0.05, 2.0
# Messages popped in one round trip at most: a busy process's backlog.
RECEIVE_BATCH = 100
# A message's key naming the channel it is not pushed to (see group_send).
ORIGIN = "origin"

# KEYS: the groups, one per message. ARGV: now, group expiry, message expiry,
# capacity, the channel key prefix; then for each message, three values: the
# message as channels-redis stores it but for its `__asgi_channel__` value, in
# two parts (the random prefix, map header and key; then the other entries),
# and a member channel to leave out ('' for none). The script puts the value
# between the two parts: the member channels that share a channel key (one
# key per process), a list that cmsgpack packs as msgpack does.
GROUP_SEND_SCRIPT = """
local now = tonumber(ARGV[1])
local group_expiry, expiry, capacity = tonumber(ARGV[2]), tonumber(ARGV[3]), tonumber(ARGV[4])
local over = 0
for g, group in ipairs(KEYS) do
  local head, tail, origin = ARGV[3 + 3 * g], ARGV[4 + 3 * g], ARGV[5 + 3 * g]
  redis.call('ZREMRANGEBYSCORE', group, 0, math.floor(now) - group_expiry)
  local keys, channels = {}, {}
  for _, channel in ipairs(redis.call('ZRANGE', group, 0, -1)) do
    if channel ~= origin then
      local bang = string.find(channel, '!', 1, true)
      local key = ARGV[5] .. (bang and string.sub(channel, 1, bang) or channel)
      if channels[key] == nil then
        channels[key] = {}
        keys[#keys + 1] = key
      end
      table.insert(channels[key], channel)
    end
  end
  for _, key in ipairs(keys) do
    redis.call('ZREMRANGEBYSCORE', key, 0, math.floor(now) - expiry)
    if redis.call('ZCARD', key) < capacity then
      -- A channel's messages are popped in score order: a microsecond
      -- apart, a call's messages keep theirs (equal scores go by the bytes).
      redis.call('ZADD', key, now + g / 1000000, head .. cmsgpack.pack(channels[key]) .. tail)
      redis.call('EXPIRE', key, expiry)
    else
      over = over + 1
    end
  end
end
return over
"""
ASGI_CHANNEL = "__asgi_channel__"
_CHANNEL_MARKER = msgpack.packb(ASGI_CHANNEL) + msgpack.packb(None)  # the key, a None value


class ResilientRedisChannelLayer(RedisChannelLayer):
    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self._recovery: asyncio.Future | None = None
        self._popped: dict[str, collections.deque] = {}  # channel key -> not yet handed out
        self._bzmpop = True  # until a Redis before 7.0 says it has no BZMPOP
        serializer = self._serializer
        # The one-script group_send writes what channels-redis would: msgpack,
        # unencrypted, one capacity, one Redis. Otherwise channels-redis's own.
        self._one_script = (
            isinstance(serializer, MsgPackSerializer)
            and serializer.crypter is None
            and not self.channel_capacity
            and self.ring_size == 1
        )

    async def receive(self, channel: str) -> dict:
        if "!" in channel:
            message = self._receive_ready(channel)
            if message is not None:
                return message
        try:
            if "!" in channel and not self.receive_count:
                return await self._receive_alone(channel)
            return await super().receive(channel)
        except (RedisError, OSError):
            logger.warning("channel layer lost Redis; waiting for it", exc_info=True)
        # One wait per outage, however many receivers failed.
        if self._recovery is None or self._recovery.done():
            self._recovery = asyncio.ensure_future(self._wait_for_redis(channel))
        await asyncio.shield(self._recovery)
        return dict(RECOVERED)

    def _receive_ready(self, channel: str) -> dict | None:
        """A message for this process's `channel` that needs no wait: one
        buffered for it, or one popped from Redis with an earlier message.
        None when it must wait.

        channels-redis starts tasks for every message (a lock and a queue
        raced in asyncio.wait, a backup cleaner), so that several coroutines
        can share the process's key in Redis. When nobody else is receiving
        (the fan-out alone, in production), what was popped together is
        handed out here at once: a burst goes out in one turn of the loop.
        """
        buffers = self.receive_buffer
        if not self.receive_count:  # nobody holds the receive lock
            popped = self._popped.get(self.prefix + self.non_local_name(channel))
            while popped and (channel not in buffers or buffers[channel].empty()):
                self._route(popped.popleft(), channel)
        return self._buffered(channel)

    def _buffered(self, channel: str) -> dict | None:
        """The next message routed to `channel`'s buffer, if any."""
        queue = self.receive_buffer.get(channel)
        if queue is None or queue.empty():
            return None
        message = queue.get_nowait()
        if queue.empty():
            del self.receive_buffer[channel]
        return message

    def _route(self, content: bytes, channel: str) -> None:
        """A popped message into the buffers of the channels it is for, as
        channels-redis's receive_single and receive route it."""
        message = self.deserialize(content)
        targets = message.pop(ASGI_CHANNEL, channel)
        for target in targets if isinstance(targets, list) else [targets]:
            self.receive_buffer[target].put_nowait(message)

    async def _receive_alone(self, channel: str) -> dict:
        """A receive on this process's channel key while nobody else receives
        on it (the fan-out, in production).

        channels-redis's protocol holds: the receiver that holds the receive
        lock pops and routes, and one that comes meanwhile waits for the lock
        or its buffer. Without its two tasks and asyncio.wait per message
        and its backup cleaner's task: a process of several receives every
        other process's message this way.
        """
        self.receive_count += 1
        self.receive_lock, self.receive_event_loop = asyncio.Lock(), asyncio.get_running_loop()
        await self.receive_lock.acquire()  # free: at once
        name = self.non_local_name(channel)
        index, key = self.consistent_hash(name), self.prefix + name
        try:
            while (message := self._buffered(channel)) is None:
                content = await self._brpop_with_clean(index, key, timeout=self.brpop_timeout)
                if content is not None:
                    self._route(content, channel)
            return message
        finally:
            self.receive_lock.release()
            self.receive_count -= 1
            if not self.receive_count:
                self.receive_lock = self.receive_event_loop = None

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

    # --- fewer round trips ----------------------------------------------------------------

    async def group_send(self, group: str, message: dict) -> None:
        await self.group_send_many([(group, message)])

    async def group_send_many(self, messages: list[tuple[str, dict]]) -> None:
        """group_send for each (group, message), in one round trip."""
        if not self._one_script:
            for group, message in messages:
                await super().group_send(group, message)
            return
        args = [time.time(), self.group_expiry, self.expiry, self.capacity, self.prefix]
        length = self._serializer.random_prefix_length
        for group, message in messages:
            assert self.require_valid_group_name(group), "Group name not valid"
            head, tail = _split_at_channel(message)
            # What keeps equal messages apart in the channel's sorted set.
            prefix = random.getrandbits(8 * length).to_bytes(length, "big")
            args += [prefix + head, tail, message.get(ORIGIN) or ""]
        # One Redis (_one_script): any group's connection serves them all.
        connection = self.connection(self.consistent_hash(messages[0][0]))
        over = await client_script(connection, GROUP_SEND_SCRIPT)(
            keys=[self._group_key(group) for group, _ in messages], args=args
        )
        if over:
            logger.info("%s channels over capacity in groups %s", over, [g for g, _ in messages])

    async def _brpop_with_clean(self, index: int, channel: str, timeout: float):
        if not channel.endswith("!"):
            # A channel that any process may take from: a message at a time.
            return await super()._brpop_with_clean(index, channel, timeout)
        popped = self._popped.get(channel)
        if popped:
            return popped.popleft()
        connection = self.connection(index)
        if self._bzmpop:
            try:
                # Waits for the first message and takes what piled up, in one
                # round trip: a quiet process wakes once per message.
                result = await connection.bzmpop(
                    timeout, 1, [channel], min=True, count=RECEIVE_BATCH
                )
            except ResponseError as exc:
                if "unknown command" not in str(exc).lower():
                    raise
                logger.info("Redis before 7.0 (no BZMPOP): receiving in two round trips")
                self._bzmpop = False
            else:
                return None if result is None else self._hand_out(channel, result[1])
        batch = await connection.zpopmin(channel, RECEIVE_BATCH)
        if not batch:
            result = await connection.bzpopmin(channel, timeout=timeout)
            return None if result is None else result[1]
        return self._hand_out(channel, batch)

    def _hand_out(self, channel: str, batch: list) -> bytes:
        """The first of the popped (member, score) pairs; the others wait for
        the next receives."""
        self._popped[channel] = collections.deque(member for member, _ in batch[1:])
        return batch[0][0]

    async def _clean_receive_backup(self, index: int, channel: str) -> None:
        if not channel.endswith("!"):
            await super()._clean_receive_backup(index, channel)
        # A process's own channel has no backup queue (_brpop_with_clean).

    async def flush(self) -> None:
        self._popped.clear()
        await super().flush()


def _split_at_channel(message: dict) -> tuple[bytes, bytes]:
    """`message` packed as channels-redis packs it, with `__asgi_channel__`
    first: the bytes before that key's value, and those after it."""
    packed = msgpack.packb({ASGI_CHANNEL: None, **message})
    # The map header is 1 or 3 bytes; the key follows it.
    start = packed.index(_CHANNEL_MARKER) + len(_CHANNEL_MARKER) - 1
    return packed[:start], packed[start + 1 :]
