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
- A process's own channel (the fan-out's) is pushed to, not popped from:
  the process subscribes to its channel key (SUBSCRIBE), and the scripts
  PUBLISH a message for it instead of storing it (_Subscription). Receiving
  costs no command per message; popping cost one (BZMPOP, which waits and
  takes what piled up), and channels-redis makes four (restore its backup
  queue, pop, back up, clean the backup). A message for a key nobody is
  subscribed to is stored as channels-redis stores it, and the subscription
  pops those: when it starts (what came before Redis took it, or while it
  was lost) and every second (senders without these scripts, such as plain
  channels-redis or an older release during a rolling deploy).
  What Redis pushed or a pop brought waits in the layer's buffers for the
  next receive; a process that dies loses it as it loses whatever its
  sockets had not yet been sent.
- Other receives pop, with BZMPOP where a process's channel is popped (the
  layer configured without its scripts: encrypted, sharded or with
  per-channel capacities).
- The scripts run on one pipelined connection per event loop, packed by
  hand (chat.redispipe): through redis-py, a message's publish cost the
  process nearly three times the CPU of its round trip. A Redis reached over
  TLS, a Unix socket or Sentinel is still called through redis-py.

Measured in docs/performance.md.
"""

import asyncio
import collections
import logging
import random
import time
import weakref

import msgpack
import redis.asyncio as aioredis
from channels.exceptions import ChannelFull
from channels_redis.core import RedisChannelLayer
from channels_redis.serializers import MsgPackSerializer
from redis.asyncio.sentinel import SentinelConnectionPool
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import RedisError, ResponseError

from chat.redispipe import ScriptPipe
from chat.sharedstate import client_script, per_loop

logger = logging.getLogger(__name__)

RECOVERED = {"type": "layer.recovered"}
BACKOFF_FIRST, BACKOFF_MAX = 0.05, 2.0
# Messages popped in one round trip at most: a busy process's backlog.
RECEIVE_BATCH = 100
# How often a process's subscription pops its key's sorted set, and how long
# it may be quiet before it sends a PING (_Subscription).
SWEEP_SECONDS = 1.0
# A message's key naming the channel it is not pushed to (see group_send).
ORIGIN = "origin"

# A message for a process's channel key (`key`): pushed to the process if it
# is subscribed to the key (PUBLISH; chat.fanout's receive is), else kept in
# the key's sorted set for a receive to pop, with channels-redis's expiry and
# capacity. Returns 1 if the set was full and the message dropped, else 0.
# Expects the locals `now`, `expiry` and `capacity`.
DELIVER = """
local function deliver(key, message, score)
  if redis.call('PUBLISH', key, message) > 0 then
    return 0
  end
  redis.call('ZREMRANGEBYSCORE', key, 0, math.floor(now) - expiry)
  if redis.call('ZCARD', key) >= capacity then
    return 1
  end
  redis.call('ZADD', key, score, message)
  redis.call('EXPIRE', key, expiry)
  return 0
end
"""
# KEYS: a process's channel key. ARGV: now, message expiry, capacity, the message.
SEND_SCRIPT = (
    """
local now, expiry, capacity = tonumber(ARGV[1]), tonumber(ARGV[2]), tonumber(ARGV[3])
"""
    + DELIVER
    + """
return deliver(KEYS[1], ARGV[4], now)
"""
)

# KEYS: the groups, one per message. ARGV: now, group expiry, message expiry,
# capacity, the channel key prefix; then for each message, three values: the
# message as channels-redis stores it but for its `__asgi_channel__` value, in
# two parts (the random prefix, map header and key; then the other entries),
# and a member channel to leave out ('' for none). The script puts the value
# between the two parts: the member channels that share a channel key (one
# key per process), a list that cmsgpack packs as msgpack does.
GROUP_SEND_SCRIPT = (
    """
local now = tonumber(ARGV[1])
local group_expiry, expiry, capacity = tonumber(ARGV[2]), tonumber(ARGV[3]), tonumber(ARGV[4])
"""
    + DELIVER
    + """
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
    -- A microsecond apart, a call's messages keep their order in the set.
    over = over + deliver(key, head .. cmsgpack.pack(channels[key]) .. tail, now + g / 1000000)
  end
end
return over
"""
)
ASGI_CHANNEL = "__asgi_channel__"
_CHANNEL_MARKER = msgpack.packb(ASGI_CHANNEL) + msgpack.packb(None)  # the key, a None value


class _Subscription:
    """What Redis pushes to this process for one channel key (SUBSCRIBE),
    routed to the receive buffers by one task.

    The layer's scripts PUBLISH a message for a process's key, and keep it in
    the key's sorted set only when nobody is subscribed (DELIVER). So the
    task, once subscribed, first pops what was kept meanwhile (before Redis
    took the subscription, or while it was lost), then reads pushes; every
    SWEEP_SECONDS it pops again, for what senders without these scripts
    (plain channels-redis, an older release in a rolling deploy) put there.
    A subscription quiet for SWEEP_SECONDS sends a PING, and one that stays
    silent after it is taken for lost. A lost one fails its receives, the
    layer waits for Redis and says so (RECOVERED), and the next receive
    subscribes again. If Redis refuses the SUBSCRIBE itself (an ACL without
    pub/sub), the process pops its channel instead, as before.
    """

    def __init__(self, layer: "ResilientRedisChannelLayer", index: int, key: str, channel: str):
        self.layer, self.index, self.key = layer, index, key
        self.channel = channel  # where a message that names no channel goes
        self.loop = asyncio.get_running_loop()
        self.error: RedisError | OSError | None = None
        self.waiters: set[asyncio.Future] = set()
        self.connection = None
        self.refused = False  # Redis refused the SUBSCRIBE itself
        self.task = self.loop.create_task(self._read_forever())

    async def wait(self) -> None:
        """Until something was routed to the buffers; raises what ended the subscription."""
        if self.error is None:
            waiter = self.loop.create_future()
            self.waiters.add(waiter)
            try:
                await waiter
            finally:
                self.waiters.discard(waiter)
        if self.error is not None:
            raise self.error

    def _wake(self) -> None:
        for waiter in self.waiters:
            if not waiter.done():
                waiter.set_result(None)

    async def stop(self) -> None:
        if self.loop is asyncio.get_running_loop():
            self.task.cancel()
            await asyncio.wait({self.task})
        # A receive still waiting goes the way of a lost subscription.
        self.error = self.error or RedisConnectionError("unsubscribed")
        self._wake()

    async def _read_forever(self) -> None:
        # Not the pool's: a subscribed connection takes no other command.
        connection = self.layer.connection(self.index).connection_pool.make_connection()
        self.connection = connection
        try:
            await connection.connect()
            await connection.send_command("SUBSCRIBE", self.key)
            try:
                await connection.read_response(push_request=True)  # the subscription is taken
            except ResponseError:  # refused: an ACL without pub/sub, say
                self.refused = True
                raise
            await self._sweep()
            swept, pinged = self.loop.time(), False
            while True:
                reply = await connection.read_response(timeout=SWEEP_SECONDS, push_request=True)
                if reply is None:  # quiet
                    if pinged:
                        raise RedisConnectionError("Redis did not answer a PING")
                    await connection.send_command("PING")
                    pinged = True
                else:
                    pinged = False
                    if reply[0] == b"message":
                        self._route(reply[2])
                if self.loop.time() - swept >= SWEEP_SECONDS:
                    await self._sweep()
                    swept = self.loop.time()
        except (RedisError, OSError) as exc:
            self.error = exc
        except Exception as exc:  # its receives must not wait forever
            logger.exception("subscription to %s failed", self.key)
            self.error = RedisError(f"subscription failed: {exc!r}")
        finally:
            self._wake()
            await connection.disconnect(nowait=True)

    def _route(self, content: bytes) -> None:
        try:
            self.layer._route(content, self.channel)
        except Exception:  # one bad message must not end the others
            logger.exception("dropped a message on %s that could not be read", self.key)
            return
        self._wake()

    async def _sweep(self) -> None:
        """Route what the key's sorted set holds."""
        redis = self.layer.connection(self.index)
        while batch := await redis.zpopmin(self.key, RECEIVE_BATCH):
            for content, _ in batch:
                self._route(content)
            if len(batch) < RECEIVE_BATCH:
                break


class ResilientRedisChannelLayer(RedisChannelLayer):
    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self._recovery: asyncio.Future | None = None
        self._popped: dict[str, collections.deque] = {}  # channel key -> not yet handed out
        self._subscriptions: dict[str, _Subscription] = {}  # channel key -> its pushes
        self._push = True  # until Redis refuses a subscription
        self._bzmpop = True  # until a Redis before 7.0 says it has no BZMPOP
        self._pipes: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()  # per event loop
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
            if "!" in channel and self._one_script and self._push:  # our scripts push
                return await self._receive_pushed(channel)
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
        buffered for it (pushed, or popped with an earlier message), or one
        popped from Redis with an earlier message. None when it must wait.

        channels-redis starts tasks for every message (a lock and a queue
        raced in asyncio.wait, a backup cleaner), so that several coroutines
        can share the process's key in Redis. What came together is handed
        out here at once instead: a burst goes out in one turn of the loop.
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

    async def _receive_pushed(self, channel: str) -> dict:
        """A receive on a process's channel key, whose messages Redis pushes
        to this process (_Subscription) instead of keeping them to be popped:
        no command per message, and a quiet process waits without one."""
        name = self.non_local_name(channel)
        key = self.prefix + name
        loop = asyncio.get_running_loop()
        subscription = self._subscriptions.get(key)
        if subscription is not None and subscription.loop is not loop:
            # Both would route every message to the same buffers (channels-redis
            # refuses two loops too). Tests run loops in turn: the last one is over.
            if not (subscription.loop.is_closed() or subscription.task.done()):
                raise RuntimeError("Two event loops are trying to receive() on one channel layer")
            subscription = None
        if subscription is None:
            subscription = _Subscription(self, self.consistent_hash(name), key, channel)
            self._subscriptions[key] = subscription
        try:
            while (message := self._buffered(channel)) is None:
                await subscription.wait()
        except (RedisError, OSError) as exc:
            if self._subscriptions.get(key) is subscription:
                del self._subscriptions[key]  # the next receive subscribes again
            if not subscription.refused:
                raise
            # Subscribing again would fail again, and each failure would
            # cost every socket a catch-up. Unsubscribed, the process's
            # messages are stored for it (DELIVER): it pops them instead.
            logger.warning("Redis refused SUBSCRIBE (%s); popping the channel instead", exc)
            self._push = False
            return await super().receive(channel)
        return message

    async def stop_receiving(self, channel: str) -> None:
        """This process receives no more on `channel`'s key (the fan-out closes)."""
        subscription = self._subscriptions.pop(self.prefix + self.non_local_name(channel), None)
        if subscription is not None:
            await subscription.stop()

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

    async def send(self, channel: str, message: dict) -> None:
        """channels-redis's send, but a process's channel gets it pushed if
        the process is subscribed (DELIVER): in one round trip, not four."""
        if not (self._one_script and "!" in channel):
            return await super().send(channel, message)
        assert self.require_valid_channel_name(channel), "Channel name not valid"
        assert ASGI_CHANNEL not in message
        name = self.non_local_name(channel)
        connection = self.connection(self.consistent_hash(name))
        content = self.serialize({**message, ASGI_CHANNEL: channel})
        args = [time.time(), self.expiry, self.get_capacity(channel), content]
        if await self._run_script(connection, SEND_SCRIPT, [self.prefix + name], args):
            raise ChannelFull()

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
        keys = [self._group_key(group) for group, _ in messages]
        over = await self._run_script(connection, GROUP_SEND_SCRIPT, keys, args)
        if over:
            logger.info("%s channels over capacity in groups %s", over, [g for g, _ in messages])

    async def _run_script(self, connection: aioredis.Redis, source: str, keys: list, args: list):
        """The script `source` on this event loop's pipelined connection
        (chat.redispipe) where the layer's Redis is reached over plain TCP;
        through redis-py otherwise (TLS, a Unix socket, Sentinel)."""
        pool = connection.connection_pool
        plain = issubclass(pool.connection_class, aioredis.Connection) and not (
            issubclass(pool.connection_class, aioredis.SSLConnection)
            or isinstance(pool, SentinelConnectionPool)
        )
        if not plain:
            return await client_script(connection, source)(keys=keys, args=args)
        pipe = per_loop(self._pipes, lambda: ScriptPipe(pool.connection_kwargs))
        return await pipe.run(source, keys, args)

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
        for pipe in self._pipes.values():
            pipe.close()
        self._pipes.clear()
        self._popped.clear()
        subscriptions, self._subscriptions = self._subscriptions, {}
        for subscription in subscriptions.values():
            await subscription.stop()
        self.receive_buffer.clear()
        await super().flush()


def _split_at_channel(message: dict) -> tuple[bytes, bytes]:
    """`message` packed as channels-redis packs it, with `__asgi_channel__`
    first: the bytes before that key's value, and those after it."""
    packed = msgpack.packb({ASGI_CHANNEL: None, **message})
    # The map header is 1 or 3 bytes; the key follows it.
    start = packed.index(_CHANNEL_MARKER) + len(_CHANNEL_MARKER) - 1
    return packed[:start], packed[start + 1 :]
