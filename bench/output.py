"""What a bench run leaves: the results JSON and its markdown tables."""

import hashlib
import json
import subprocess
from pathlib import Path
from typing import Any

import profile_summary
import report
from servers import RESULTS, ROOT, SHARED


def git_info() -> dict:
    def git(*args: str) -> str:
        try:
            done = subprocess.run(  # noqa: S603
                ["git", *args],  # noqa: S607
                cwd=ROOT,
                capture_output=True,
                text=True,
                check=False,
            )
            return done.stdout.strip()
        except OSError:
            return ""

    return {
        "commit": git("rev-parse", "--short", "HEAD"),
        # The working tree changes under a long run when others edit it: this
        # tells two runs of the same commit apart.
        "diff_sha256": hashlib.sha256(git("diff", "HEAD").encode()).hexdigest()[:12],
        "uncommitted_files": len(
            [line for line in git("status", "--porcelain").splitlines() if line]
        ),
    }


def versions() -> dict:
    wanted = {
        "django",
        "channels",
        "channels-redis",
        "daphne",
        "twisted",
        "autobahn",
        "djangorestframework",
    }
    out = {}
    for req in [
        ROOT / "requirements.txt",
        *(SHARED / "peers").glob("*/requirements.txt"),
        SHARED / "bench" / "requirements.txt",
    ]:
        for line in req.read_text().splitlines():
            name, _, version = line.partition("==")
            if version and (req.parent.name != "main" or name.lower() in wanted):
                out.setdefault(req.parent.name if req.parent != ROOT else "project", {})[name] = (
                    version
                )
    return out


def write_results(
    bench: Any, meta: dict, chosen: list[dict], history: dict | None, profile: dict | None
) -> None:
    summary = report.summarize(bench.records, chosen)
    data = {
        **meta,
        "notes": bench.notes,
        "summary": summary,
        "history": history,
        "profile": profile,
        "runs": bench.records,
    }
    json_path = RESULTS / f"{bench.stem}.json"
    tmp = json_path.with_name(json_path.name + ".tmp")
    tmp.write_text(json.dumps(data, indent=1, default=str))
    tmp.replace(json_path)
    md = render_markdown(meta, summary, history, profile, bench.notes)
    md_path = RESULTS / f"{bench.stem}.md"
    md_path.write_text(md)
    print(
        f"\nbench: wrote {json_path.relative_to(ROOT)}, {md_path.relative_to(ROOT)}, "
        f"{bench.jsonl.relative_to(ROOT)}\n",
        flush=True,
    )
    print(md, flush=True)


def project_line(meta: dict) -> str:
    if meta.get("project_ref"):
        tree = meta.get("project_tree", "")
        return f"Project: `{meta['project_ref']}` = commit {tree.rsplit('/', 1)[-1]} (a snapshot)"
    git = meta["git"]
    return (
        f"Project: the work tree at commit {git.get('commit')} with"
        f" {git.get('uncommitted_files')} uncommitted files (diff {git.get('diff_sha256')})"
    )


def render_markdown(
    meta: dict, summary: dict, history: dict | None, profile: dict | None, notes: list
) -> str:
    cfg = meta["config"]
    lines = [
        f"# Bench results {meta['date']}{' (quick smoke run)' if meta['quick'] else ''}",
        "",
        f"{project_line(meta)};"
        f" {meta.get('nproc')} cores; {meta['started']} to {meta.get('finished')}."
        f" {cfg['repeats']} repetition(s), interleaved; windows of {cfg['duration']:g} s"
        f" after {cfg['warmup']:g} s warm-up; sweep factor {cfg['sweep_factor']:g}."
        " Method: docs/performance.md.",
        "",
        "Each cell is the median over the repetitions that count (`(k/n)` when some did not);"
        " ratios are medians of the per-repetition ratios. `≥` marks a sweep that stopped"
        " because the load generator ran out of CPU, not the server; `<X` a sweep that failed"
        " its first step, at X (the p99 100 ms / no-loss bound). Fixed-rate runs are at"
        " half of each server's own max sustained rate (the scale-out pair both at half of one"
        " process's, and project_1proc_half, one process, at half that: the load each of the"
        " pair carries). Server CPU is the Daphne/uvicorn/bare process only, not PostgreSQL or"
        " Redis.",
        "",
    ]
    if meta.get("interrupted"):
        lines += [f"**This run did not finish: {meta['interrupted']}.**", ""]
    lines += [f"Note: {n}" for n in notes] + ([""] if notes else [])
    lines.append(report.markdown_tables(summary))
    lines.append(report.history_table(history))
    if profile:
        lines.append(profile_summary.markdown(profile))
    return "\n".join(lines)


def rerender(path: Path) -> None:
    """Recompute the summary and the markdown of a results JSON (after a report change)."""
    data = json.loads(path.read_text())
    data["summary"] = report.summarize(data["runs"], data["scenarios"])
    profile = data.get("profile")
    raw_name = (profile or {}).get("files", {}).get("raw")
    raw = ROOT / raw_name if raw_name else None
    if profile and raw and raw.is_file():
        profile["summary"] = profile_summary.summarize(raw)
    path.write_text(json.dumps(data, indent=1, default=str))
    md = render_markdown(data, data["summary"], data.get("history"), profile, data.get("notes", []))
    path.with_suffix(".md").write_text(md)
    print(f"bench: rewrote {path} and {path.with_suffix('.md')}")
