"""Where the state that every server process must agree on lives.

Presence and the sockets' seats each have two stores: Redis when REDIS_URL
is set (several processes act as one), else a dict in this one process (the
in-memory channel layer cannot span more than one anyway). This module picks
the store once per process, and hands out Redis clients per event loop. (The
send rate limit lives in the database: chat.ratelimit.)
"""

import asyncio
import weakref
from collections.abc import Callable
from typing import TypeVar

import redis.asyncio as aioredis
from django.conf import settings
from redis.commands.core import AsyncScript
from redis.driver_info import DriverInfo
from redis.exceptions import NoScriptError

from chat.redisconnection import Connection

Store = TypeVar("Store")

_stores: dict[str, object] = {}
# redis-py clients belong to the event loop that made them; tests and
# async_to_sync run several loops, so keep one client per loop and URL.
_clients: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()
_scripts: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()  # client -> source -> script


def shared_store(
    name: str, *, redis: Callable[[str, str], Store], local: Callable[[], Store]
) -> Store:
    """The process's `name` store: `redis(url, key_prefix)` with Redis, else `local()`."""
    store = _stores.get(name)
    if store is None:
        url = settings.REDIS_URL
        store = _stores[name] = redis(url, settings.REDIS_PREFIX) if url else local()
    return store


def per_loop(registry: weakref.WeakKeyDictionary, make: Callable[[], Store]) -> Store:
    """`registry`'s object for the running event loop, made by `make` on first
    use: one loop per process in production, but tests and async_to_sync run
    several, and asyncio objects belong to the loop that made them."""
    loop = asyncio.get_running_loop()
    obj = registry.get(loop)
    if obj is None:
        obj = registry[loop] = make()
    return obj


def reset_shared_stores() -> None:
    """Forget the stores, so that the next calls follow the current settings (tests)."""
    _stores.clear()


# redis-py looks its own version up in the installed package's metadata (a
# walk of sys.path) for every connection it opens, to name itself to Redis
# (CLIENT SETINFO). Resolved once here: in a connect storm, when each
# process opens hundreds of connections, that lookup was a sixth of the CPU.
DRIVER_INFO = DriverInfo()


def _pool_options() -> dict:
    """What every pool of ours sets (see loop_client)."""
    return {
        "max_connections": settings.REDIS_MAX_CONNECTIONS,
        "timeout": settings.REDIS_POOL_TIMEOUT,
        "driver_info": DRIVER_INFO,
    }


def loop_client(url: str, **options: object) -> aioredis.Redis:
    """A Redis client for `url` that belongs to the running event loop.

    Its pool makes a command wait for a free connection when all
    REDIS_MAX_CONNECTIONS are busy, up to REDIS_POOL_TIMEOUT: redis-py's
    default pool fails it instead, and when a thousand sockets closed at once
    (a proxy restarting) their seats were not released.
    """
    clients = _clients.setdefault(asyncio.get_running_loop(), {})
    key = (url, tuple(sorted(options.items())))
    client = clients.get(key)
    if client is None:
        pool = aioredis.BlockingConnectionPool.from_url(
            url, **_pool_options(), connection_class=Connection, **options
        )
        client = clients[key] = aioredis.Redis.from_pool(pool)
    return client


class Script(AsyncScript):
    """A Lua script run by its hash (EVALSHA), loaded again if Redis forgot it.

    redis-py's own asks on every call whether its client is a pipeline, an
    isinstance check against a class that derives from a typing.Protocol: in
    a connect storm's profile the seat's script fell from 9.8% to 3.6% of the
    samples without it, and a script runs for every message sent too. Called
    with a pipeline, it is redis-py's.
    """

    async def __call__(self, keys=None, args=None, client=None):
        if client is not None:
            return await super().__call__(keys, args, client)
        keys = keys or []
        client = self.registered_client
        try:
            return await client.evalsha(self.sha, len(keys), *keys, *(args or []))
        except NoScriptError:
            # Redis restarted empty, or another server answers.
            self.sha = await client.script_load(self.script)
            return await client.evalsha(self.sha, len(keys), *keys, *(args or []))


def client_script(client: aioredis.Redis, source: str) -> Script:
    """The Lua script `source`, registered with `client` once: registering
    hashes the source and builds an object, a tenth of a send's CPU if done on
    every call."""
    per_client = _scripts.setdefault(client, {})
    script = per_client.get(source)
    if script is None:
        script = per_client[source] = Script(client, source)
    return script
