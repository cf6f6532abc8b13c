"""Figures and tables of `make bench-flood` (bench/flood.py): one row per phase."""

import statistics

import profile_summary

FLOOD_CODES = ["rate_limited", "frame_too_large", "invalid_json", "invalid_frame", "unknown_type"]


def percentiles(values: list[float]) -> dict:
    """Nearest-rank p50/p99/p99.9 and max, in ms, of latencies in seconds."""
    if not values:
        return {"p50": None, "p99": None, "p99_9": None, "max": None}
    ordered = sorted(values)

    def rank(q: float) -> float:
        return ordered[min(len(ordered) - 1, max(0, round(q * len(ordered)) - 1))]

    return {
        "p50": round(rank(0.50) * 1000, 2),
        "p99": round(rank(0.99) * 1000, 2),
        "p99_9": round(rank(0.999) * 1000, 2),
        "max": round(ordered[-1] * 1000, 2),
    }


def fmt(value) -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        if abs(value) >= 100:
            return f"{value:,.0f}"
        return f"{value:.3g}" if abs(value) < 10 else f"{value:.1f}"
    if isinstance(value, int):
        return f"{value:,}"
    return str(value)


def median_of(rows: list[dict], key: str) -> float | None:
    values = [row["latency_ms"][key] for row in rows if row["latency_ms"][key] is not None]
    return round(statistics.median(values), 2) if values else None


def summarize(rows: list[dict]) -> dict:
    """Medians over the valid repetitions of each phase, and the median of the
    per-repetition ratios flood / baseline (each flood paired with the
    baseline just before it)."""
    valid = [row for row in rows if row["valid"]]
    by_phase = {phase: [r for r in valid if r["phase"] == phase] for phase in ("baseline", "flood")}
    out: dict = {"phases": {}}
    for phase, phase_rows in by_phase.items():
        out["phases"][phase] = {
            "repetitions": len(phase_rows),
            **{key: median_of(phase_rows, key) for key in ("p50", "p99", "p99_9", "max")},
            "lost": sum(r["lost"] for r in phase_rows),
            "out_of_order": sum(r["out_of_order"] for r in phase_rows),
            "server_cpu_pct": _median([r["server_cpu_pct"] for r in phase_rows]),
        }
    for key in ("p50", "p99", "p99_9", "max"):
        ratios = []
        for rep in sorted({r["rep"] for r in valid}):
            pair = {r["phase"]: r["latency_ms"][key] for r in valid if r["rep"] == rep}
            if pair.get("baseline") and pair.get("flood") is not None:
                ratios.append(pair["flood"] / pair["baseline"])
        out[f"ratio_{key}"] = round(statistics.median(ratios), 2) if ratios else None
    return out


def _median(values: list) -> float | None:
    values = [v for v in values if v is not None]
    return round(statistics.median(values), 1) if values else None


def markdown(meta: dict, rows: list[dict], summary: dict) -> str:
    cfg = meta["config"]
    lines = [
        f"# Flood benchmark, {meta['date']}",
        "",
        f"Project tree: `{meta['project_tree']}` (commit {meta['git'].get('commit')},"
        f" {meta['git'].get('uncommitted_files')} uncommitted files in the work tree)."
        f" Socket limits in force: SEND_RATE {meta['limits'].get('SEND_RATE')}/s,"
        f" SEND_BURST {meta['limits'].get('SEND_BURST')},"
        f" MAX_FRAME_BYTES {meta['limits'].get('MAX_FRAME_BYTES')}.",
        f"1 room x {cfg['members']} members; {cfg['senders']} of them send"
        f" {fmt(cfg['sender_rate'])} msg/s each (periodic, staggered), measured at the"
        f" {cfg['members'] - 1} other members, from the scheduled send time;"
        f" {cfg['warmup']:g} s warm-up, {cfg['window']:g} s window, {cfg['drain']:g} s drain."
        f" Flood: one more socket of its own user, an open loop of {fmt(cfg['flood_rate'])}"
        " frames/s (16 of 20 valid messages, then one each: 20 KB message, cut JSON,"
        " JSON array, unknown type).",
        "",
        "**Others' messages**",
        "",
        "| rep | phase | p50 ms | p99 ms | p99.9 ms | max ms | deliveries | lost"
        " | out of order | normal sends refused | server CPU % | loadgen CPU % | valid |",
        "|---:|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---|",
    ]
    for r in rows:
        lat = r["latency_ms"]
        lines.append(
            f"| {r['rep'] + 1} | {r['phase']} | {fmt(lat['p50'])} | {fmt(lat['p99'])}"
            f" | {fmt(lat['p99_9'])} | {fmt(lat['max'])} | {fmt(r['deliveries'])}"
            f" | {fmt(r['lost'])} | {fmt(r['out_of_order'])}"
            f" | {fmt(sum(r['normal_refused'].values()))} | {fmt(r['server_cpu_pct'])}"
            f" | {fmt(r['loadgen_cpu_pct'])} | {'yes' if r['valid'] else 'invalid'} |"
        )
    flood_rows = [r for r in rows if r["flooder"]]
    if flood_rows:
        lines += [
            "",
            "**The flooder** (frames over the warm-up and the window; answers read until"
            " 1 s of quiet after it)",
            "",
            "| rep | offered | sent | acked | " + " | ".join(FLOOD_CODES) + " | other errors"
            " | unanswered | server closed it |",
            "|---:|" + "---:|" * (5 + len(FLOOD_CODES)) + "---|",
        ]
        for r in flood_rows:
            f = r["flooder"]
            refused = f.get("refused", {})
            other = sum(n for code, n in refused.items() if code not in FLOOD_CODES)
            codes = " | ".join(fmt(refused.get(code, 0)) for code in FLOOD_CODES)
            lines.append(
                f"| {r['rep'] + 1} | {fmt(f.get('offered'))} | {fmt(f.get('sent'))}"
                f" | {fmt(f.get('acked'))} | {codes} | {fmt(other)}"
                f" | {fmt(f.get('unanswered'))} | {f.get('closed_by_server') or 'no'} |"
            )
    lines += [
        "",
        "**Where the CPU went** (% of one core over the window; the machine has"
        f" {meta['nproc']} cores)",
        "",
        "| rep | phase | Daphne | PostgreSQL backends | Redis | flooder | loadgen"
        " | machine busy | Daphne RSS MiB | settle s | server tracebacks |",
        "|---:|---|---:|---:|---:|---:|---:|---:|---|---:|---:|",
    ]
    for r in rows:
        rss = r["server_rss_mib"]
        lines.append(
            f"| {r['rep'] + 1} | {r['phase']} | {fmt(r['server_cpu_pct'])}"
            f" | {fmt(r['postgres_cpu_pct'])} | {fmt(r['redis_cpu_pct'])}"
            f" | {fmt(r['flooder_cpu_pct'])} | {fmt(r['loadgen_cpu_pct'])}"
            f" | {fmt(r['machine_busy_pct'])} | {fmt(rss[0])} → {fmt(rss[1])}"
            f" | {fmt(r['settle_s'])} | {fmt(r['tracebacks'])} |"
        )
    base, flood = summary["phases"]["baseline"], summary["phases"]["flood"]
    lines += [
        "",
        "**Summary** (medians over the valid repetitions; ratios are medians of the"
        " per-repetition ratios)",
        "",
        "| | baseline | flood | flood / baseline |",
        "|---|---:|---:|---:|",
    ]
    for key, label in (("p50", "p50 ms"), ("p99", "p99 ms"), ("p99_9", "p99.9 ms")):
        lines.append(
            f"| others' {label} | {fmt(base[key])} | {fmt(flood[key])}"
            f" | {fmt(summary[f'ratio_{key}'])}x |"
        )
    lines += [
        f"| others' max ms | {fmt(base['max'])} | {fmt(flood['max'])}"
        f" | {fmt(summary['ratio_max'])}x |",
        f"| lost (sum) | {fmt(base['lost'])} | {fmt(flood['lost'])} | |",
        f"| out of order (sum) | {fmt(base['out_of_order'])} | {fmt(flood['out_of_order'])} | |",
        f"| server CPU % | {fmt(base['server_cpu_pct'])} | {fmt(flood['server_cpu_pct'])} | |",
        f"| valid repetitions | {base['repetitions']} | {flood['repetitions']} | |",
    ]
    for note in meta.get("notes", []):
        lines += ["", f"Note: {note}"]
    if meta.get("interrupted"):
        lines += ["", f"**Run {meta['interrupted']}**: the rows above are what it gathered."]
    return "\n".join(lines) + "\n"


def render(data: dict) -> str:
    """The whole markdown of a run, from its JSON (flood.py, or `--render`)."""
    text = markdown(data, data["rows"], data["summary"])
    profile = data.get("profile")
    if profile and profile.get("row"):
        row = profile["row"]
        lat, flooder = row["latency_ms"], row.get("flooder") or {}
        answered = (flooder.get("acked") or 0) + sum((flooder.get("refused") or {}).values())
        text += (
            "\nThe profiled flood phase itself, with py-spy pausing Daphne 100 times a second:"
            f" others' p50 {fmt(lat['p50'])} ms, p99 {fmt(lat['p99'])} ms, max"
            f" {fmt(lat['max'])} ms, lost {fmt(row['lost'])}; Daphne CPU"
            f" {fmt(row['server_cpu_pct'])}%; the flooder got answers to {fmt(answered)} of"
            f" {fmt(flooder.get('sent'))} frames; {fmt(row['settle_s'])} s to settle.\n"
        )
    if profile and profile.get("files"):
        text += "\n" + profile_summary.markdown(profile)
    return text
