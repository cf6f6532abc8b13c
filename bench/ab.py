"""Builds of the project side by side: one scenario at one fixed rate, interleaved.

A design change is judged against the build before it, in the same minutes
on the same machine (docs/performance.md, "A/B runs"). Each target is one
Daphne process, or several sharing Redis (the scale-out scenario's pair),
serving a commit (a snapshot, as BENCH_PROJECT_REF makes) or the work tree,
with extra environment if asked. Every round runs each target once through
loadgen at the same offered rate, in alternating order, and the result is
each run's deliveries per server CPU-second and p50, and each target's
ratio to the first, round by round:

    .venv/bin/python bench/ab.py --scenario rooms10x20 --rate 800 --rounds 4 \\
        base=6b55055 new=.
    .venv/bin/python bench/ab.py --scenario room100 --rate 433 one=. pair=.+2
    .venv/bin/python bench/ab.py one=. 'py313=. PYTHON=/path/to/python3.13'

A target is `label=REF[+N] [NAME=VALUE...]`: REF a commit or `.` (the work
tree), N its processes (default 1), NAME=VALUE its environment (PYTHON: the
interpreter, default the project's .venv). The results go to
bench/results/<date>-<commit>-ab-<scenario>-<labels>.md and .jsonl. Takes the bench's
lock: never beside `make bench`, nor beside tests (they share the database,
Redis and the two cores).

--perf SECONDS records each target's first process with Linux perf in the
first round, from --perf-after seconds into the run (after loadgen's setup),
and adds its CPU time by Python function to the results (perf_profile.py;
Python names need an interpreter of 3.12 or later, PYTHON= and
PYTHONPERFSUPPORT=1).
"""

import argparse
import datetime
import json
import os
import shlex
import statistics
from dataclasses import dataclass, field
from pathlib import Path

import perf_profile
import procs
import run
import servers
from servers import LOGS, RESULTS, SHARED, VENVS


@dataclass
class Target:
    label: str
    ref: str
    processes: int = 1
    env: dict = field(default_factory=dict)
    per_cpu: list = field(default_factory=list)  # deliveries per server CPU-s, by round
    p50: list = field(default_factory=list)

    @classmethod
    def parse(cls, spec: str) -> "Target":
        first, *assignments = shlex.split(spec)
        label, _, ref = first.partition("=")
        ref, _, processes = ref.partition("+")
        env = dict(assignment.split("=", 1) for assignment in assignments)
        return cls(label, ref or ".", int(processes or 1), env)


def start(target: Target, env: dict) -> dict:
    """The target's processes, serving its tree: loadgen's view of them (run.Bench.targets)."""
    tree = servers.project_tree(None if target.ref == "." else target.ref)
    started = []
    for number in range(target.processes):
        server = servers.daphne(f"ab-{target.label}{number}", env, tree)
        extra = dict(target.env)
        python = extra.pop("PYTHON", None)
        if python:
            server.cmd[0] = python
        server.env.update(extra)
        server.start()
        started.append(server)
    return {"urls": [s.url for s in started], "servers": started}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("targets", nargs="+", help="label=REF[+N] [NAME=VALUE...]")
    parser.add_argument("--scenario", default="room100", help="room100, rooms10x20, room1000")
    parser.add_argument("--rate", type=float, default=433, help="offered messages per second")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--duration", type=float, default=10, help="measured seconds per run")
    parser.add_argument("--perf", type=float, default=0, help="seconds of perf record (0: none)")
    parser.add_argument("--perf-after", type=float, default=15, help="seconds into the run")
    args = parser.parse_args()

    targets = [Target.parse(spec) for spec in args.targets]
    lock = run.take_lock()  # noqa: F841 - released when the process ends
    cfg = run.Config()
    cfg.fixed_duration = args.duration
    today = datetime.date.today().isoformat()
    # Named for the work tree's commit too, as run.py's results (`-wip` if changed).
    labels = "-".join(t.label for t in targets)
    stem = f"{today}-{servers.project_commit()}-ab-{args.scenario}-{labels}"
    bench = run.Bench(cfg, stem)
    RESULTS.mkdir(parents=True, exist_ok=True)
    bench.jsonl.write_text("")
    scenario = next(s for s in run.scenarios(cfg, filtered=False) if s["key"] == args.scenario)
    scenario["servers"] = [t.label for t in targets]
    try:
        servers.check_services()
        bench.loadgen_python = procs.ensure_venv(
            VENVS / "loadgen", [SHARED / "bench" / "requirements.txt"], LOGS / "venvs.log"
        )
        env = bench.env = servers.project_env()
        servers.prepare_project(False, env)
        for target in targets:
            bench.targets[target.label] = start(target, env)
        for number in range(args.rounds):
            order = targets if number % 2 == 0 else targets[::-1]
            for target in order:
                recording = None
                if args.perf and number == 0:
                    pid = bench.targets[target.label]["servers"][0].pid
                    data = LOGS / f"{stem}-{target.label}.perf.data"
                    recording = perf_profile.record_after(args.perf_after, pid, args.perf, data)
                result = bench.invoke(scenario, target.label, number, "fixed", args.rate)
                if recording is not None:
                    recording.wait()
                    counts = perf_profile.by_function(data)
                    (RESULTS / f"{stem}-{target.label}-perf.txt").write_text(
                        perf_profile.render(counts)
                    )
                    data.unlink()
                result = result.get("result") or {}
                cpu, delivered = result.get("server_cpu_pct"), result.get("deliveries_per_s")
                valid = result.get("valid") and not result.get("lost") and cpu and delivered
                target.per_cpu.append(delivered / (cpu / 100) if valid else None)
                target.p50.append((result.get("latency_ms") or {}).get("p50"))
    finally:
        procs.stop_all()
    table = render(targets, args)
    (RESULTS / f"{stem}.md").write_text(table)
    print(table)


def render(targets: list[Target], args: argparse.Namespace) -> str:
    base = targets[0]
    lines = [
        f"# A/B: {args.scenario} at {args.rate:g} msg/s, {args.rounds} rounds of"
        f" {args.duration:g} s ({datetime.datetime.now().isoformat(timespec='minutes')})",
        "",
        "| target | deliveries per server CPU-s, by round | median | / "
        f"{base.label}, by round | p50 ms, by round |",
        "|---|---|---:|---|---|",
    ]
    for target in targets:
        figures = [round(x) if x else None for x in target.per_cpu]
        known = [x for x in target.per_cpu if x]
        ratios = [
            round(x / y, 3) if x and y else None
            for x, y in zip(target.per_cpu, base.per_cpu, strict=True)
        ]
        median = round(statistics.median(known)) if known else None
        spec = f"{target.ref}{f'+{target.processes}' if target.processes > 1 else ''}"
        spec += "".join(f" {k}={v}" for k, v in target.env.items())
        lines.append(
            f"| {target.label} (`{spec}`) | {json.dumps(figures)} | {median} |"
            f" {json.dumps(ratios)} | {json.dumps(target.p50)} |"
        )
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    os.chdir(Path(__file__).resolve().parent)  # loadgen_ext.py and the logs, as run.py
    main()
