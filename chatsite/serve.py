"""Daphne on uvloop's event loop:

    python -m chatsite.serve [Daphne's options] chatsite.asgi:application

Daphne serves through Twisted on an asyncio event loop, which it makes when
daphne.server is first imported, of the kind the event loop policy makes.
Everything runs on that loop: Twisted's sockets, Channels' consumers, the
round's statement on PostgreSQL (chat.asyncdb), the Redis subscription. Set
before Daphne is imported, uvloop's policy makes it uvloop's loop: its turns
(polling, timers, ready callbacks) run in libuv's C instead of asyncio's
Python: about 7% less server CPU per delivered message in 1 room x 100
members, measured by hand; smaller than the benchmark's noise
(docs/performance.md, "Daphne on uvloop").

This is how `make run`, the Dockerfile, `make stack`, the tests' servers and
the benchmark start Daphne. The arguments are Daphne's own: the plain
`daphne` command still serves the same application, on asyncio's loop.

It also makes sure that the process ends once Daphne has stopped (SIGTERM,
SIGINT). Django runs a request's synchronous parts (a synchronous middleware,
the view) in a thread, and a thread that hands work back to the event loop
(async_to_sync: the rest of the middleware chain, a broadcast) waits for the
loop. Stopped mid-request, the loop never answers, and Python's exit joins
those threads forever: under a login burst a plain `daphne` outlived its
SIGTERM indefinitely. Here the usual exit gets SHUTDOWN_GRACE seconds; after
them the process logs the threads still running and ends without them (as a
SIGKILL would, which is what an orchestrator would send next).
"""

import asyncio
import logging
import os
import sys
import threading
import time

import uvloop

# How long the process may take to exit after Daphne has stopped.
SHUTDOWN_GRACE = 5.0

logger = logging.getLogger("chatsite.serve")  # not __main__ under -m


def install() -> None:
    """Make Daphne's event loop uvloop's; before daphne.server is imported."""
    if "daphne.server" in sys.modules:
        raise RuntimeError("daphne.server is imported already: its event loop is made")
    asyncio.set_event_loop_policy(uvloop.EventLoopPolicy())


def exit_after(grace: float, code: int = 0) -> None:
    """End the process `grace` seconds from now if it is still running then,
    whatever its other threads wait for."""

    def end() -> None:
        time.sleep(grace)
        main = threading.main_thread()
        stuck = [t.name for t in threading.enumerate() if t is not main and not t.daemon]
        logger.warning(
            "still exiting %.0f s after the server stopped: ending without threads %s",
            grace,
            stuck,
        )
        logging.shutdown()
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(code)

    # A daemon thread: Python's exit does not wait for it, and it runs while
    # that exit joins the other threads.
    threading.Thread(target=end, name="exit-watchdog", daemon=True).start()


def main() -> None:
    install()
    from daphne.cli import CommandLineInterface  # only now: it makes the loop

    CommandLineInterface.entrypoint()
    exit_after(SHUTDOWN_GRACE)


if __name__ == "__main__":
    main()
