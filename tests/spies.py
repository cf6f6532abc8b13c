"""Counting what the real thing does, without replacing it."""


def record_calls(monkeypatch, owner: object, name: str) -> list[list]:
    """Wrap the coroutine function `owner.name`, which takes one collection:
    each call's collection is recorded (as a list), then the original runs.
    Returns the record."""
    calls: list[list] = []
    original = getattr(owner, name)

    async def recorded(items):
        calls.append(list(items))
        return await original(items)

    monkeypatch.setattr(owner, name, recorded)
    return calls
