"""Daphne on uvloop's event loop:

    python -m chatsite.serve [Daphne's options] chatsite.asgi:application

Daphne serves through Twisted on an asyncio event loop, which it makes when
daphne.server is first imported, of the kind the event loop policy makes.
Everything runs on that loop: Twisted's sockets, Channels' consumers, the
round's statement on PostgreSQL (chat.asyncdb), the Redis subscription. Set
before Daphne is imported, uvloop's policy makes it uvloop's loop: its turns
(polling, timers, ready callbacks) run in libuv's C instead of asyncio's
Python: about 7% less server CPU per delivered message in 1 room x 100
members (docs/performance.md, "Daphne on uvloop").

This is how `make run`, the Dockerfile, `make stack`, the tests' servers and
the benchmark start Daphne. The arguments are Daphne's own: the plain
`daphne` command still serves the same application, on asyncio's loop.
"""

import asyncio
import sys

import uvloop


def install() -> None:
    """Make Daphne's event loop uvloop's; before daphne.server is imported."""
    if "daphne.server" in sys.modules:
        raise RuntimeError("daphne.server is imported already: its event loop is made")
    asyncio.set_event_loop_policy(uvloop.EventLoopPolicy())


def main() -> None:
    install()
    from daphne.cli import CommandLineInterface  # only now: it makes the loop

    CommandLineInterface.entrypoint()


if __name__ == "__main__":
    main()
