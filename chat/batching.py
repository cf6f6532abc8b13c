"""Calls that come together, served together: one round trip for a burst.

A reconnect storm (every client of a restarted process at once) makes the
same small call for each socket: read its user, take its seat. A busy room's
posts do too: take a token, store the message, publish it. Made one by one,
each is a round trip and its fixed costs (a query built, a command packed and
parsed, a hop to the database thread and back), and they queue. A Batch
serves every call that came while it was busy in its next round, with one
call of a function that takes them all; a lone call still goes out at once.
"""

import asyncio
import contextvars
import weakref
from collections.abc import Awaitable, Callable, Hashable
from dataclasses import dataclass, field
from typing import Any, Generic, TypeVar

from channels.db import database_sync_to_async
from django.db import close_old_connections

from chat.sharedstate import per_loop

Key = TypeVar("Key", bound=Hashable)
Value = TypeVar("Value")


class Batch(Generic[Key, Value]):
    """`await batch.get(key)`: `serve(keys)[key]` (None if absent), for keys
    asked at about the same time served by one `serve` call.

    A round starts after its calls came, so what was committed before a call
    is seen by it. If `serve` raises, each call of that round raises it.
    Belongs to one event loop (see chat.sharedstate.per_loop).
    """

    def __init__(self, serve: Callable[[list[Key]], Awaitable[dict[Key, Value]]]) -> None:
        self.serve = serve
        self.waiting: dict[Key, list[asyncio.Future]] = {}
        self.serving: asyncio.Task | None = None

    async def get(self, key: Key) -> Value | None:
        return await self.submit(key)

    def submit(self, key: Key) -> asyncio.Future:
        """get(key) as a future, so that the caller may do other work until
        the round (which starts with the loop's next turn) is over."""
        loop = asyncio.get_running_loop()
        future = loop.create_future()
        self.waiting.setdefault(key, []).append(future)
        if self.serving is None:
            # Its own context: it serves many calls, not the first one's.
            self.serving = loop.create_task(self._serve(), context=contextvars.Context())
        return future

    async def _serve(self) -> None:
        try:
            while self.waiting:
                batch, self.waiting = self.waiting, {}
                try:
                    values = await self.serve(list(batch))
                except Exception as exc:  # noqa: BLE001 - not caught: raised in each call
                    for futures in batch.values():
                        for future in futures:
                            if not future.done():
                                future.set_exception(exc)
                    continue
                for key, futures in batch.items():
                    for future in futures:
                        if not future.done():  # not given up on (the caller left)
                            future.set_result(values.get(key))
        finally:
            self.serving = None


# --- the database thread, once per turn for the calls of every socket -------------------
# Every socket's database work runs in the process's one database thread
# (thread_sensitive), and a hop there and back costs the event loop more than
# many a query (docs/performance.md): under load, the calls of a turn share one.


@dataclass(eq=False, slots=True)  # a call: compared by identity, never merged
class _Call:
    func: Callable[..., Any]
    kwargs: dict[str, Any]
    # The caller's, as database_sync_to_async would: what the call logs
    # carries its socket's connection id (chatsite.logs).
    context: contextvars.Context = field(default_factory=contextvars.copy_context)


def _serve_each(calls: list[_Call]) -> dict[_Call, Any]:
    """Each call on its own: what it returned, or what it raised."""
    outcomes = {}
    for call in calls:
        try:
            outcomes[call] = call.context.run(call.func, **call.kwargs)
        except Exception as exc:  # noqa: BLE001 - not caught: raised in its own caller
            outcomes[call] = exc
            # As between two hops: a connection left broken is replaced.
            close_old_connections()
    return outcomes


_database_batches: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()  # per event loop


async def database_call(func: Callable[..., Value], /, **kwargs: Any) -> Value:
    """`database_sync_to_async(func)(**kwargs)`, in one hop to the database
    thread with the other calls made in the same turn of the event loop.
    Each runs on its own, in autocommit, in its caller's context."""
    batch = per_loop(_database_batches, lambda: Batch(database_sync_to_async(_serve_each)))
    outcome = await batch.get(_Call(func, kwargs))
    if isinstance(outcome, Exception):
        raise outcome
    return outcome
