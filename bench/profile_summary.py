"""Text summary of a py-spy recording in collapsed-stack form (`--format raw`).

Each line of the file is `frame;frame;...;leaf COUNT`, a frame being
`function (path/file.py:line)`. The summary says where the samples were:
on the event loop or in worker threads (sync_to_async), in which package the
leaf frame was (self time), and the functions with the most self and
inclusive samples, lines dropped so that one function counts once.
"""

import re
from collections import Counter
from pathlib import Path

FRAME = re.compile(r"^(?P<func>.*) \((?P<path>[^()]*?)(?::\d+)?\)$")
TOP = 15


def parse(path: Path) -> list[tuple[list[str], int]]:
    stacks = []
    for line in path.read_text(errors="replace").splitlines():
        stack, _, count = line.rpartition(" ")
        if stack and count.isdigit():
            stacks.append((stack.split(";"), int(count)))
    return stacks


def function_of(frame: str) -> str:
    match = FRAME.match(frame)
    return f"{match['func']} ({match['path']})" if match else frame


def package_of(frame: str) -> str:
    match = FRAME.match(frame)
    if not match:
        return "?"
    path = match["path"]
    return path.split("/", 1)[0].removesuffix(".py") if "/" in path else path.removesuffix(".py")


# Leaf frames where a thread waits rather than works (py-spy's idle filter does
# not catch these): the thread pools' idle workers and the event loop's select.
WAITING = {
    "Condition.wait (threading.py)",
    "_worker (concurrent/futures/thread.py)",
    "EpollSelector.select (selectors.py)",
    "Queue.get (psycopg_pool/_acompat.py)",
}


# What a stack was doing, by the first rule whose text occurs in it (a
# heuristic grouping for the project's Daphne; the raw stacks are in the file).
ACTIVITIES = [
    # Twisted's untilConcludes also wraps the socket's send() (in doWrite, and
    # in a turn's sends, chatsite/twisted_writes.py): those samples are the
    # socket write, not the log.
    (
        "socket write: Daphne, autobahn, Twisted",
        (
            "handle_reply (daphne/",
            "autobahn/",
            "FileDescriptor.doWrite",
            "chatsite/twisted_writes.py",
            "chat/daphne_frames.py",
        ),
    ),
    (
        "writing the server log (Twisted logger, logging)",
        ("untilConcludes", "twisted/logger/", "logging/"),
    ),
    ("database (psycopg, Django ORM)", ("psycopg/", "psycopg_pool/", "django/db/")),
    ("presence (chat/presence.py)", ("chat/presence.py",)),
    ("channel layer: group_send / send", ("group_send", "RedisChannelLayer.send ")),
    ("channel layer: receive", ("RedisChannelLayer.receive", "ChannelLayer.receive")),
    ("socket read: Twisted, autobahn, Daphne", ("dataReceived", "onMessage")),
    # The room's fan-out past the writes: its loop, order, and per-socket state.
    ("fan-out to a room's sockets (chat/fanout.py)", ("chat/fanout.py",)),
    # Channels' own dispatch; every consumer's stack has `as_asgi`'s app, so
    # that alone says nothing.
    ("consumer dispatch (channels)", ("await_many_dispatch", "AsyncConsumer.dispatch")),
    ("HTTP requests (Django, DRF)", ("django/core/handlers", "rest_framework/")),
    ("sync_to_async / async_to_sync (asgiref)", ("asgiref/",)),
]


def activity_of(stack: str) -> str:
    for name, needles in ACTIVITIES:
        if any(n in stack for n in needles):
            return name
    return "other"


def summarize(path: Path) -> dict:
    stacks = parse(path)
    total = sum(count for _, count in stacks) or 1
    self_fn, incl_fn, self_pkg, roots = Counter(), Counter(), Counter(), Counter()
    incl_by_root: dict[str, Counter] = {}
    activities = Counter()
    waiting = 0
    for frames, count in stacks:
        leaf = function_of(frames[-1])
        root = "worker threads" if "Thread._bootstrap" in frames[0] else "event loop (main thread)"
        roots[root] += count
        if leaf in WAITING:
            waiting += count
            continue
        self_fn[leaf] += count
        self_pkg[package_of(frames[-1])] += count
        activities[activity_of(";".join(frames))] += count
        for name in {function_of(f) for f in frames}:
            incl_fn[name] += count
            incl_by_root.setdefault(root, Counter())[name] += count
    # Frames on (nearly) every stack of their thread, like the event loop's
    # run_forever or a worker's _bootstrap, say nothing: leave them out.
    busy_roots = Counter()
    for root, counter in incl_by_root.items():
        busy_roots[root] = max(counter.values(), default=0)
    structural = {
        name
        for root, counter in incl_by_root.items()
        for name, n in counter.items()
        if n >= 0.9 * busy_roots[root]
    }
    busy = total - waiting

    def share(counter: Counter, skip: set[str] = frozenset()) -> list[list]:
        rows = [[name, n, round(100 * n / total, 1)] for name, n in counter.most_common()]
        return [r for r in rows if r[0] not in skip][:TOP]

    return {
        "samples": total,
        "waiting_samples": waiting,
        "busy_samples": busy,
        "where": [[name, n, round(100 * n / total, 1)] for name, n in roots.most_common()],
        "by_activity": share(activities),
        "self_by_package": share(self_pkg),
        "self_by_function": share(self_fn),
        "inclusive_by_function": share(incl_fn, structural),
    }


def markdown(profile: dict) -> str:
    lines = ["### Profile of the project's Daphne (py-spy)", ""]
    summary = profile.get("summary")
    files = ", ".join(f"`{f}`" for f in profile.get("files", {}).values() if f)
    lines.append(
        f"Scenario `{profile.get('scenario')}` at {profile.get('rate_msgs_per_s')} msg/s offered, "
        f"{profile.get('seconds')} s at 100 Hz (py-spy's own idle filter on)."
        f" Files: {files or 'none'}."
    )
    for error in profile.get("errors", []):
        lines.append(f"\nFailed: {error}")
    if not summary:
        return "\n".join(lines) + "\n"
    threads = "; ".join(f"{name} {pct}%" for name, _, pct in summary["where"])
    lines.append(
        f"\n{summary['samples']:,} samples ({threads}), of which"
        f" {summary.get('waiting_samples', 0):,} were thread-pool or selector waits, left out"
        " of the tables below (their percentages are of all samples)."
    )
    for title, key in (
        ("Busy samples by activity (first matching rule, a heuristic)", "by_activity"),
        ("Self time by package", "self_by_package"),
        ("Self time by function", "self_by_function"),
    ):
        lines += ["", f"{title}:", "", "| | samples | % |", "|---|---:|---:|"]
        lines += [f"| `{name}` | {n:,} | {pct} |" for name, n, pct in summary[key]]
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    import json
    import sys

    print(json.dumps(summarize(Path(sys.argv[1])), indent=1))
