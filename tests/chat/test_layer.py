"""The Redis channel layer as configured (chat.layers, settings.CHANNEL_LAYERS)."""

import asyncio
import collections
from contextlib import asynccontextmanager

import pytest
import redis.asyncio as aioredis
from channels.layers import get_channel_layer
from channels_redis.core import RedisChannelLayer
from django.conf import settings
from redis._parsers.hiredis import _AsyncHiredisParser
from redis.exceptions import ResponseError

from chat import layers, redispipe
from chat.layers import ORIGIN, ResilientRedisChannelLayer
from tests.conftest import need_redis

pytestmark = pytest.mark.asyncio


async def test_a_quiet_receive_is_not_taken_for_a_lost_redis():
    """channels-redis waits 5 s per blocking pop; a read timeout of the Redis
    client as short (redis-py's default) made every quiet wait fail, and each
    failure woke every socket of the process to catch up from the database."""
    need_redis()
    layer = get_channel_layer()
    channel = await layer.new_channel()
    receiving = asyncio.ensure_future(layer.receive(channel))
    await asyncio.sleep(7)  # more than one blocking pop
    await layer.send(channel, {"type": "hello"})
    done, _ = await asyncio.wait({receiving}, timeout=10)
    assert done, "nothing received"
    assert receiving.result() == {"type": "hello"}


def _layers():
    """The project's layer and plain channels-redis, on one Redis and prefix."""
    need_redis()
    ours = get_channel_layer()
    config = settings.CHANNEL_LAYERS["default"]["CONFIG"]
    return ours, RedisChannelLayer(**config)


def _another_process():
    """The project's layer as another process of the project has it."""
    need_redis()
    return ResilientRedisChannelLayer(**settings.CHANNEL_LAYERS["default"]["CONFIG"])


EVENT = {"type": "room.event", "room_id": 7, "text": '{"body": "h\\u00e9"}', "client_id": None}


@asynccontextmanager
async def _in_group(group: str, *members):
    """(layer, channel) `members` in `group` for the block."""
    for layer, channel in members:
        await layer.group_add(group, channel)
    try:
        yield
    finally:
        for layer, channel in members:
            await layer.group_discard(group, channel)


async def _receive(layer, channel: str) -> dict:
    return await asyncio.wait_for(layer.receive(channel), 5)


@pytest.mark.parametrize("direction", ["ours to channels-redis", "channels-redis to ours"])
async def test_the_one_script_group_send_and_the_batched_receive_speak_channels_redis(direction):
    """Processes of either kind can share a Redis: what one sends to a group,
    the other receives, None values and non-ASCII text included."""
    ours, theirs = _layers()
    sender, receiver = (ours, theirs) if direction.startswith("ours") else (theirs, ours)
    group = f"layer-test-{direction[:4]}"
    channel = await receiver.new_channel()
    async with _in_group(group, (receiver, channel)):
        for n in range(3):
            await sender.group_send(group, {**EVENT, "n": n})
        received = [await _receive(receiver, channel) for _ in range(3)]
    assert received == [{**EVENT, "n": n} for n in range(3)]


async def test_a_group_send_goes_once_to_each_process_and_skips_expired_members():
    ours, theirs = _layers()
    group = "layer-test-members"
    mine, other_process, dead = await ours.new_channel(), await theirs.new_channel(), "x.dead!1"
    redis = ours.connection(0)
    async with _in_group(group, (ours, mine), (theirs, other_process)):
        await redis.zadd(ours._group_key(group), {dead: 1})  # last renewed in 1970
        await ours.group_send(group, EVENT)
        assert await _receive(ours, mine) == EVENT
        assert await _receive(theirs, other_process) == EVENT
        members = await redis.zrange(ours._group_key(group), 0, -1)
    assert dead.encode() not in members
    # Nothing was pushed to the dead process's channel.
    assert not await redis.exists(ours.prefix + ours.non_local_name(dead))


async def test_a_group_send_to_a_full_channel_is_dropped_as_channels_redis_drops_it(monkeypatch):
    ours, _ = _layers()
    monkeypatch.setattr(ours, "capacity", 2)
    group = "layer-test-capacity"
    channel = await ours.new_channel()
    async with _in_group(group, (ours, channel)):
        for n in range(3):
            await ours.group_send(group, {**EVENT, "n": n})
        first_two = [await _receive(ours, channel) for _ in range(2)]
        await ours.group_send(group, {**EVENT, "n": 3})  # room again
        after = await _receive(ours, channel)
    assert [m["n"] for m in first_two] == [0, 1]
    assert after["n"] == 3


async def test_a_channel_any_process_may_take_from_is_popped_a_message_at_a_time():
    """Batching there would let one process hoard what another could serve."""
    ours, theirs = _layers()
    for n in range(3):
        await theirs.send("layer-test-shared", {**EVENT, "n": n})
    assert (await _receive(ours, "layer-test-shared"))["n"] == 0
    assert [(await _receive(theirs, "layer-test-shared"))["n"] for _ in range(2)] == [1, 2]


async def test_flushing_the_layer_forgets_what_a_receive_popped():
    ours, theirs = _layers()
    channel = await ours.new_channel()
    for n in range(3):
        await theirs.send(channel, {**EVENT, "n": n})
    assert (await _receive(ours, channel))["n"] == 0  # the other two wait in the layer
    await ours.flush()
    await theirs.send(channel, {**EVENT, "n": 9})
    assert (await _receive(ours, channel))["n"] == 9


def _commands_sent(monkeypatch) -> collections.Counter:
    """The Redis commands this process sends from now on, by name (counted
    here, not in Redis's INFO: other clients of the same Redis, a server or
    another test run, would count there too)."""
    sent: collections.Counter = collections.Counter()
    original, original_pack = aioredis.Redis.execute_command, redispipe.pack

    async def counted(self, *args, **options):
        sent[str(args[0]).lower()] += 1
        return await original(self, *args, **options)

    def packed(*args):  # the layer's scripts, on its own connection
        sent[args[0].decode().lower()] += 1
        return original_pack(*args)

    monkeypatch.setattr(aioredis.Redis, "execute_command", counted)
    monkeypatch.setattr(redispipe, "pack", packed)
    return sent


async def test_a_process_channel_is_pushed_to_without_a_command_per_message(monkeypatch):
    """The fan-out's channel is subscribed to (chat.layers._Subscription):
    Redis pushes each message another process sends it. Popping cost a
    command per message (a blocking pop to wait, one more to look before
    that), and a pair of processes paid it on every message of the other."""
    monkeypatch.setattr(layers, "SWEEP_SECONDS", 60)  # no sweep while counting
    other, ours = _another_process(), get_channel_layer()
    channel = await ours.new_channel()
    receiving = asyncio.ensure_future(_receive(ours, channel))
    await other.send(channel, {**EVENT, "n": -1})
    assert (await receiving)["n"] == -1  # subscribed by now
    sent = _commands_sent(monkeypatch)
    for n in range(5):
        receiving = asyncio.ensure_future(_receive(ours, channel))
        await asyncio.sleep(0.02)  # waiting
        await other.send(channel, {**EVENT, "n": n})
        assert (await receiving)["n"] == n
    # The sends' scripts, and not one command to receive.
    assert sent == {"evalsha": 5}


async def test_pushed_messages_and_replies_are_parsed_by_hiredis(monkeypatch):
    """redis-py parses in C when hiredis is installed (requirements.txt): the
    subscription's pushes, one per message of another process, and every
    reply. Nothing here asks for its Python parser instead."""
    other, ours = _another_process(), get_channel_layer()
    channel = await ours.new_channel()
    receiving = asyncio.ensure_future(_receive(ours, channel))
    await other.send(channel, {**EVENT, "n": 1})
    assert (await receiving)["n"] == 1
    [subscription] = ours._subscriptions.values()
    assert isinstance(subscription.connection._parser, _AsyncHiredisParser)


async def test_what_plain_channels_redis_puts_in_a_subscribed_channel_is_swept_up():
    """A sender without the layer's scripts (an older release in a rolling
    deploy) stores instead of pushing: the subscription pops that too."""
    ours, theirs = _layers()
    channel = await ours.new_channel()
    receiving = asyncio.ensure_future(_receive(ours, channel))
    await asyncio.sleep(0.2)  # subscribed
    await theirs.send(channel, {**EVENT, "n": 1})
    assert (await receiving)["n"] == 1


async def test_a_message_that_cannot_be_read_is_dropped_and_the_next_received():
    other, ours = _another_process(), get_channel_layer()
    channel = await ours.new_channel()
    receiving = asyncio.ensure_future(_receive(ours, channel))
    await other.send(channel, {**EVENT, "n": 1})
    assert (await receiving)["n"] == 1  # subscribed
    key = ours.prefix + ours.non_local_name(channel)
    await ours.connection(0).publish(key, b"\x00" * 12 + b"not msgpack")
    await other.send(channel, {**EVENT, "n": 2})
    assert (await _receive(ours, channel))["n"] == 2


async def test_a_second_event_loop_may_not_receive_on_the_process_channel_key():
    """Two loops' subscriptions to one key would each route every message
    to the layer's buffers: each twice."""
    other, ours = _another_process(), get_channel_layer()
    channel, second = await ours.new_channel(), await ours.new_channel()
    receiving = asyncio.ensure_future(_receive(ours, channel))
    await other.send(channel, EVENT)
    assert await receiving == EVENT  # subscribed in this loop
    with pytest.raises(RuntimeError, match="Two event loops"):
        await asyncio.to_thread(asyncio.run, ours.receive(second))


async def test_a_lost_subscription_loses_nothing_and_subscribes_again():
    """Redis drops the subscribed connection (a restart, a network blip, its
    output buffer limit): the receive says RECOVERED, what was sent meanwhile
    is kept in Redis, and the next receive subscribes again and gets it."""
    other, ours = _another_process(), get_channel_layer()
    channel = await ours.new_channel()
    receiving = asyncio.ensure_future(_receive(ours, channel))
    await other.send(channel, {**EVENT, "n": 1})
    assert (await receiving)["n"] == 1
    receiving = asyncio.ensure_future(_receive(ours, channel))
    await asyncio.sleep(0.1)
    # This subscription's connection only: other processes may share this Redis.
    subscription = ours._subscriptions[ours.prefix + ours.non_local_name(channel)]
    host, port = subscription.connection._writer.get_extra_info("sockname")[:2]
    assert await ours.connection(0).client_kill_filter(_type="pubsub", addr=f"{host}:{port}") == 1
    assert (await receiving)["type"] == "layer.recovered"
    await other.send(channel, {**EVENT, "n": 2})  # nobody subscribed: kept
    await other.send(channel, {**EVENT, "n": 3})
    assert [(await _receive(ours, channel))["n"] for _ in range(2)] == [2, 3]
    await other.send(channel, {**EVENT, "n": 4})  # subscribed again: pushed
    assert (await _receive(ours, channel))["n"] == 4


async def test_a_redis_without_bzmpop_is_received_from_all_the_same(monkeypatch):
    """Redis before 7.0: a receive that pops (the layer configured without its
    scripts: encrypted, sharded) falls back to a pop and a blocking pop."""
    ours, theirs = _layers()
    monkeypatch.setattr(ours, "_one_script", False)
    channel = await ours.new_channel()
    redis = ours.connection(0)

    async def unknown(*args, **kwargs):
        raise ResponseError("unknown command 'BZMPOP', with args beginning with: ")

    monkeypatch.setattr(redis, "bzmpop", unknown)
    monkeypatch.setattr(ours, "_bzmpop", True)
    for n in range(3):
        await theirs.send(channel, {**EVENT, "n": n})
    assert [(await _receive(ours, channel))["n"] for _ in range(3)] == [0, 1, 2]
    assert ours._bzmpop is False
    receiving = asyncio.ensure_future(_receive(ours, channel))
    await asyncio.sleep(0.1)  # a blocking pop
    await theirs.send(channel, {**EVENT, "n": 3})
    assert (await receiving)["n"] == 3


async def test_a_burst_popped_together_is_handed_out_in_one_turn_of_the_loop():
    """What one pop brought is handed out without a wait: channels-redis
    raced a lock and a queue in fresh tasks for each message, so the fan-out
    sent each message of a burst on a turn of its own."""
    ours, theirs = _layers()
    channel = await ours.new_channel()
    for n in range(5):
        await theirs.send(channel, {**EVENT, "n": n})
    assert (await _receive(ours, channel))["n"] == 0
    turns = []
    asyncio.get_running_loop().call_soon(turns.append, "a turn of the loop")
    rest = [(await ours.receive(channel))["n"] for _ in range(4)]
    assert rest == [1, 2, 3, 4]
    assert turns == []


async def test_a_group_message_for_two_channels_of_a_process_reaches_both():
    ours, _ = _layers()
    group = "layer-test-two-local"
    first, second = await ours.new_channel(), await ours.new_channel()
    async with _in_group(group, (ours, first), (ours, second)):
        for n in range(2):
            await ours.group_send(group, {**EVENT, "n": n})
        # The first receive pops both messages, each for both channels.
        assert [(await _receive(ours, first))["n"] for _ in range(2)] == [0, 1]
        assert [(await _receive(ours, second))["n"] for _ in range(2)] == [0, 1]


async def test_a_group_send_pushes_nothing_to_the_channel_it_came_from():
    """The sending process delivered to its own sockets already (chat.fanout):
    the others get it, and the sender's channel is not given it to pop again."""
    ours, theirs = _layers()
    group = "layer-test-origin"
    mine, other_process = await ours.new_channel(), await theirs.new_channel()
    async with _in_group(group, (ours, mine), (theirs, other_process)):
        await ours.group_send(group, {**EVENT, ORIGIN: mine})
        assert await _receive(theirs, other_process) == {**EVENT, ORIGIN: mine}
        assert not await ours.connection(0).exists(ours.prefix + ours.non_local_name(mine))


async def test_a_message_for_this_process_is_received_without_a_task():
    """channels-redis starts three tasks per message received (a lock and a
    queue raced, a backup cleaner); every other process's message comes so.
    (The subscription's one task starts with the first receive.)"""
    other, ours = _another_process(), get_channel_layer()
    channel = await ours.new_channel()
    await other.send(channel, {**EVENT, "n": 0})
    assert (await _receive(ours, channel))["n"] == 0
    await other.send(channel, EVENT)
    loop = asyncio.get_running_loop()
    started = []
    loop.set_task_factory(
        lambda loop, coro, **kw: started.append(coro) or asyncio.Task(coro, loop=loop, **kw)
    )
    try:
        assert await ours.receive(channel) == EVENT
    finally:
        loop.set_task_factory(None)
    assert started == []


async def test_a_second_receiver_of_the_process_waits_for_the_first_to_route_its_message():
    ours, theirs = _layers()
    first, second = await ours.new_channel(), await ours.new_channel()
    receiving_first = asyncio.ensure_future(ours.receive(first))
    await asyncio.sleep(0.1)  # popping, alone
    receiving_second = asyncio.ensure_future(ours.receive(second))
    await asyncio.sleep(0.1)  # waiting for the first's lock or its buffer
    await theirs.send(second, {**EVENT, "n": 2})
    await theirs.send(first, {**EVENT, "n": 1})
    done, _ = await asyncio.wait({receiving_first, receiving_second}, timeout=5)
    assert len(done) == 2, "a receiver was left waiting"
    assert (receiving_first.result()["n"], receiving_second.result()["n"]) == (1, 2)


async def test_several_group_sends_in_one_call_reach_each_group_and_skip_each_origin():
    """A turn's room events go out in one script call (chat.events), each to
    its own group, each leaving out the process it came from."""
    ours, theirs = _layers()
    mine, other_process = await ours.new_channel(), await theirs.new_channel()
    redis = ours.connection(0)
    async with (
        _in_group("layer-test-many-a", (ours, mine), (theirs, other_process)),
        _in_group("layer-test-many-b", (theirs, other_process)),
    ):
        await ours.group_send_many(
            [
                ("layer-test-many-a", {**EVENT, "n": 0, ORIGIN: mine}),
                ("layer-test-many-b", {**EVENT, "n": 1}),
                ("layer-test-many-a", {**EVENT, "n": 2}),
            ]
        )
        received = [(await _receive(theirs, other_process))["n"] for _ in range(3)]
        assert received == [0, 1, 2]
        # Only the message not from `mine` was pushed to it.
        assert (await _receive(ours, mine))["n"] == 2
        assert not await redis.exists(ours.prefix + ours.non_local_name(mine))
