"""CPU time by Python function, from Linux perf: where a server's CPU goes.

py-spy (run.py's profile) samples the wall clock of a thread that is not
idle: on these 2-core machines a server is often runnable but waiting for
a core (the load generator, PostgreSQL and Redis share them), and py-spy
charges that wait to whatever code was running, most of all the system calls
that wake another process. Its shares of a socket send or a masker's setup
came out several times what they cost (docs/performance.md, "System calls
and debug text").

perf samples the CPU itself. CPython 3.12 and later, run with
PYTHONPERFSUPPORT=1, put each Python function's name in the native stack
(`py::name:file`) for perf to find. `record` samples a running process with
its stacks; `by_function` charges each sample to the innermost Python
function on its stack: its own time, with the C code and the system calls it
made (a send is its caller's, untilConcludes in Twisted). A server under
Python 3.11, the project's own, shows no Python names: serve the same code
under a newer interpreter for this (bench/ab.py's PYTHON=).
"""

import collections
import subprocess
from pathlib import Path


def record_after(delay: float, pid: int, seconds: float, output: Path) -> subprocess.Popen:
    """Sample `pid` (999 Hz, stacks unwound from DWARF) for `seconds`, from
    `delay` seconds on; wait() on the process returned."""
    return subprocess.Popen(  # noqa: S603 - our own command, no shell
        [  # noqa: S607 - sleep, then perf from the machine (Debian's linux-perf)
            "sh",
            "-c",
            'sleep "$0" && exec "$@"',
            str(delay),
            "perf",
            "record",
            "--quiet",
            "-F",
            "999",
            "--call-graph",
            "dwarf,16384",
            "-p",
            str(pid),
            "-o",
            str(output),
            "--",
            "sleep",
            str(seconds),
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )


def by_function(data: Path) -> collections.Counter:
    """Samples by innermost Python function (`name  file`), or `[native] symbol`."""
    script = subprocess.run(  # noqa: S603
        ["perf", "script", "-i", str(data), "-F", "ip,sym"],  # noqa: S607
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    counts: collections.Counter = collections.Counter()
    for sample in script.split("\n\n"):
        frames = [line.strip() for line in sample.splitlines() if line.strip()]
        if not frames:
            continue
        python = next((frame for frame in frames if "py::" in frame), None)
        if python is None:
            symbol = frames[0].split(None, 1)[-1].split(" (")[0]
            counts[f"[native] {symbol}"] += 1
        else:
            name, _, path = python.split("py::", 1)[1].partition(":")
            counts[f"{name}  {Path(path).name}"] += 1
    return counts


def render(counts: collections.Counter, top: int = 60) -> str:
    total = sum(counts.values()) or 1
    lines = [f"{total} samples", ""]
    lines += [f"{n:6} {100 * n / total:5.1f}%  {name}" for name, n in counts.most_common(top)]
    return "\n".join(lines) + "\n"
