"""Calls that come together, served together: one round trip for a burst.

A reconnect storm (every client of a restarted process at once) makes the
same small call for each socket: read its user, take its seat. Made one by
one, each is a round trip and its fixed costs (a query built, a command
packed and parsed), and they queue. A Batch serves every call that came
while it was busy in its next round, with one call of a function that takes
them all; a lone call still goes out at once.
"""

import asyncio
import contextvars
from collections.abc import Awaitable, Callable, Hashable
from typing import Generic, TypeVar

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
        loop = asyncio.get_running_loop()
        future = loop.create_future()
        self.waiting.setdefault(key, []).append(future)
        if self.serving is None:
            # Its own context: it serves many calls, not the first one's.
            self.serving = loop.create_task(self._serve(), context=contextvars.Context())
        return await future

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
