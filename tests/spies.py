"""Counting what the real thing does, without replacing it."""

import inspect


def record_calls(monkeypatch, owner: object, name: str) -> list[list]:
    """Wrap the function or coroutine function `owner.name`, which takes one
    collection: each call's collection is recorded (as a list), then the
    original runs. Returns the record."""
    calls: list[list] = []
    original = getattr(owner, name)

    if inspect.iscoroutinefunction(original):

        async def recorded(items):
            calls.append(list(items))
            return await original(items)

    else:

        def recorded(items):
            calls.append(list(items))
            return original(items)

    monkeypatch.setattr(owner, name, recorded)
    return calls
