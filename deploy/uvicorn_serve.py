"""Serve chatsite.asgi with uvicorn: the documented alternative to Daphne.

    python deploy/uvicorn_serve.py --host 127.0.0.1 --port 8000

Daphne stays the server of `make run` and of the compose file. uvicorn serves
the same application, with no code path of its own, for about half Daphne's
CPU per delivered message (docs/performance.md); docs/deploy.md says when to
choose it. The options live here, once, for operators, the tests
(tests/servers.py) and the benchmark (bench/servers.py):

- uvloop and httptools, the fast event loop and HTTP parser;
- the websockets library's sans-I/O protocol, without per-message compression
  (Daphne offers none either; chat frames are small, and deflate costs CPU on
  every frame to every member);
- a listen backlog of 2,048 (a reconnect storm after a deploy);
- no lifespan (Channels' router has no lifespan handler);
- a bounded graceful shutdown, then the sockets are closed: clients resume
  from where they were (docs/protocol.md);
- no access log: chatsite.requestlog writes one line per request already;
- proxy headers from the addresses in FORWARDED_ALLOW_IPS (uvicorn's own
  variable; default 127.0.0.1), like Daphne's --proxy-headers behind nginx.
"""

import argparse
import os
import sys
from pathlib import Path

import uvicorn

# Runnable as a file from anywhere: the project's root is importable.
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

APPLICATION = "chatsite.asgi:application"
OPTIONS = {
    "lifespan": "off",
    "loop": "uvloop",
    "http": "httptools",
    "ws": "websockets-sansio",
    "ws_per_message_deflate": False,
    "backlog": 2048,
    "timeout_graceful_shutdown": 10,
    "access_log": False,
    "proxy_headers": True,
}


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=int(os.environ.get("PORT", "8000")))
    parser.add_argument("--log-level", default="info")
    args = parser.parse_args(argv)
    uvicorn.run(APPLICATION, host=args.host, port=args.port, log_level=args.log_level, **OPTIONS)


if __name__ == "__main__":
    main()
