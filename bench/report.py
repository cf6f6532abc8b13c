"""Medians, ratios to the peers and the markdown tables of a bench run.

A run is a list of records `{"scenario", "server", "rep", "kind", "result"}`
(or `"error"` instead of a result), one per load generator invocation. Each
figure in a table is the median over the repetitions whose run counts:

- a fixed-rate run counts when loadgen says `"valid": true` (its own CPU
  stayed under 70% of a core); rows with invalid repetitions say how many
  counted, and a cell with none says "invalid";
- a sweep whose last step was loadgen-bound, or that ran out of steps, still
  has a best step, but the server was not the limit: its figure is a lower
  bound, shown as "≥";
- a ratio is the median of the per-repetition ratios project/peer, pairing
  the runs of one repetition (they ran minutes apart, interleaved).
"""

import statistics
from collections.abc import Callable

PROJECT = "project"
PROJECTS = (PROJECT, "project_uvicorn")  # the same application, under Daphne and uvicorn
PEERS = ("seed_fastapi", "bare_ws")


def _get(path: str) -> Callable[[dict], object]:
    def get(result: dict):
        value = result
        for key in path.split("."):
            value = value.get(key) if isinstance(value, dict) else None
        return value

    return get


def per_cpu_second(result: dict) -> float | None:
    rate, cpu = result.get("deliveries_per_s"), result.get("server_cpu_pct")
    if not isinstance(rate, (int, float)) or not cpu:
        return None
    return round(rate / (cpu / 100), 1)


def sweep_lower_bound(result: dict) -> bool:
    """The sweep ended before the server's limit: the load generator ran out
    of CPU, or the sweep out of steps."""
    return str(result.get("stopped_because", "")).startswith(("loadgen-bound", "max steps"))


def latency(q: str) -> Callable[[dict], object]:
    return lambda r: (r.get("latency_ms") or {}).get(q)


def setup_failures(result: dict) -> int:
    return (result.get("connect_failures") or 0) + (result.get("join_failures") or 0)


def rss_mib_after(result: dict) -> float | None:
    kib = result.get("server_rss_kib_after")
    return round(kib / 1024, 1) if kib else None


# (title, kind, how to read it, whether a ratio to the peers is shown)
LOAD_ROWS = [
    ("max sustained deliveries/s", "sweep", _get("max_sustained_deliveries_per_s"), True),
    ("max sustained msgs/s", "sweep", _get("max_sustained_msgs_per_s"), False),
    ("out-of-order over the sweep", "sweep", _get("out_of_order"), False),
    ("server tracebacks logged (sweep)", "sweep", _get("server_tracebacks"), False),
    ("fixed run: offered deliveries/s", "fixed", _get("offered_deliveries_per_s"), False),
    ("fixed run: deliveries/s", "fixed", _get("deliveries_per_s"), False),
    ("fixed run: p50 ms", "fixed", latency("p50"), True),
    ("fixed run: p99 ms", "fixed", latency("p99"), True),
    ("fixed run: p99.9 ms", "fixed", latency("p99.9"), False),
    ("fixed run: lost", "fixed", _get("lost"), False),
    ("fixed run: duplicated", "fixed", _get("duplicated"), False),
    ("fixed run: out of order", "fixed", _get("out_of_order"), False),
    ("fixed run: server CPU %", "fixed", _get("server_cpu_pct"), False),
    ("fixed run: deliveries per server CPU-s", "fixed", per_cpu_second, True),
    ("fixed run: loadgen CPU %", "fixed", _get("loadgen_cpu_pct"), False),
    ("fixed run: sockets/s connected (setup)", "fixed", _get("connect_per_s"), False),
    ("fixed run: connect + join failures", "fixed", setup_failures, False),
    ("fixed run: s for the joins' presence frames to stop", "fixed", _get("join_settle_s"), False),
    ("fixed run: frames received after the joins", "fixed", _get("join_settle_frames"), False),
    ("fixed run: server tracebacks logged", "fixed", _get("server_tracebacks"), False),
]
IDLE_ROWS = [
    ("server RSS KiB per idle socket", "idle", _get("server_rss_kib_per_socket"), True),
    ("server RSS MiB with the sockets open", "idle", rss_mib_after, False),
    ("sockets/s connected", "idle", _get("connect_per_s"), False),
    ("connect failures", "idle", _get("connect_failures"), False),
    ("alive after settling", "idle", _get("alive_after_settle"), False),
    ("server tracebacks logged", "idle", _get("server_tracebacks"), False),
]
STORM_ROWS = [
    ("sockets/s accepted", "storm", _get("connect_per_s"), True),
    ("connect failures", "storm", _get("connect_failures"), False),
    ("alive after settling", "storm", _get("alive_after_settle"), False),
    ("server tracebacks logged", "storm", _get("server_tracebacks"), False),
]
SCALE_ROWS = [
    ("max sustained deliveries/s", "sweep", _get("max_sustained_deliveries_per_s"), True),
    ("out-of-order over the sweep", "sweep", _get("out_of_order"), False),
    ("fixed run: offered deliveries/s", "fixed", _get("offered_deliveries_per_s"), False),
    ("fixed run: deliveries/s", "fixed", _get("deliveries_per_s"), False),
    ("fixed run: p50 ms", "fixed", latency("p50"), False),
    ("fixed run: p99 ms", "fixed", latency("p99"), False),
    ("fixed run: lost", "fixed", _get("lost"), False),
    ("fixed run: duplicated", "fixed", _get("duplicated"), False),
    ("fixed run: out of order", "fixed", _get("out_of_order"), False),
    ("fixed run: connect + join failures", "fixed", setup_failures, False),
    ("fixed run: server CPU % (sum)", "fixed", _get("server_cpu_pct"), False),
    ("fixed run: CPU % per process", "fixed", _get("server_cpu_pct_per_process"), False),
    ("fixed run: deliveries per server CPU-s", "fixed", per_cpu_second, True),
    ("fixed run: loadgen CPU %", "fixed", _get("loadgen_cpu_pct"), False),
    ("fixed run: server tracebacks logged", "fixed", _get("server_tracebacks"), False),
]
ROWS_BY_KIND = {"load": LOAD_ROWS, "idle": IDLE_ROWS, "storm": STORM_ROWS, "scale": SCALE_ROWS}


def counts(record: dict) -> bool:
    """Whether a repetition's figure enters the medians."""
    result = record.get("result")
    if not result or "error" in record or result.get("error"):
        return False
    return record["kind"] != "fixed" or bool(result.get("valid"))


def median(values: list) -> float | None:
    numbers = [v for v in values if isinstance(v, (int, float)) and not isinstance(v, bool)]
    return round(statistics.median(numbers), 3) if numbers else None


def first_step_failed(result: dict, key: str) -> float | None:
    """The offered rate of a sweep's first step, if the server failed it there.

    A sweep that failed its first step has no best step: the maximum is below
    that step. One that failed there because loadgen ran out of CPU says
    nothing about the server and gives None.
    """
    steps = result.get("steps") or []
    if result.get("max_sustained_msgs_per_s") is not None or not steps:
        return None
    if sweep_lower_bound(result):
        return None
    return steps[0].get(key)


def cell(records: list[dict], kind: str, get, below_key: str | None = None) -> dict:
    """The median over the counted repetitions, and what the display needs.

    With `below_key` (the max sustained rows), a sweep that failed its first
    step counts as "below that step": it ranks under every figure, and a
    median that falls on it shows as "<step".
    """
    mine = [r for r in records if r["kind"] == kind]
    counted = [r for r in mine if counts(r)]
    values = [get(r["result"]) for r in counted]
    below = []
    if below_key:
        for i, r in enumerate(counted):
            step = first_step_failed(r["result"], below_key)
            if values[i] is None and step is not None:
                below.append(step)
                values[i] = 0.0
    lists = [v for v in values if isinstance(v, list)]
    numbers = [v for v in values if isinstance(v, (int, float)) and not isinstance(v, bool)]
    out = {
        "median": median(values),
        "values": values,
        "counted": len(numbers) or len(lists),
        "runs": len(mine),
        "below": below,
    }
    if lists:  # per-process figures: the median of each position
        out["median"] = [
            median([v[i] for v in lists if len(v) > i]) for i in range(max(map(len, lists)))
        ]
    if kind == "sweep":
        out["lower_bound"] = bool(below_key) and any(
            sweep_lower_bound(r["result"]) and get(r["result"]) is not None for r in counted
        )
        out["stops"] = [r["result"].get("stopped_because") for r in counted]
    reasons = [
        reason for r in mine for reason in (r.get("result") or {}).get("invalid_reasons", [])
    ]
    errors = [r.get("error") or (r.get("result") or {}).get("error") for r in mine]
    out["invalid_reasons"] = reasons
    out["errors"] = [e for e in errors if e]
    return out


def paired_ratio(records: list[dict], kind: str, get, num: str, den: str) -> dict:
    """Median of the per-repetition ratios num/den, over repetitions where both counted."""
    by_rep: dict[int, dict[str, float]] = {}
    reps = set()
    for r in records:
        if r["kind"] == kind:
            reps.add(r["rep"])
        if r["kind"] == kind and counts(r):
            value = get(r["result"])
            if isinstance(value, (int, float)) and not isinstance(value, bool):
                by_rep.setdefault(r["rep"], {})[r["server"]] = value
    ratios = [v[num] / v[den] for v in by_rep.values() if v.get(num) is not None and v.get(den)]
    return {
        "median": round(statistics.median(ratios), 3) if ratios else None,
        "pairs": len(ratios),
        "reps": len(reps),
    }


# Rows whose sweeps may fail their first step, and the offered rate that says so.
BELOW_KEYS = {
    "max sustained deliveries/s": "offered_deliveries_per_s",
    "max sustained msgs/s": "offered_msgs_per_s",
}


def ratio_text(ratio: dict, num: dict, den: dict) -> str:
    """A ratio as shown: `<` when the numerator's median is "below the first step"."""
    if shows_below(num) and isinstance(den.get("median"), (int, float)) and den["median"]:
        return f"<{fmt(max(num['below']) / den['median'])}x"
    if shows_below(den) and isinstance(num.get("median"), (int, float)) and not shows_below(num):
        return f">{fmt(num['median'] / max(den['below']))}x"
    if ratio["median"] is None:
        return ""
    text = f"{fmt(ratio['median'])}x"
    if ratio["pairs"] < ratio["reps"]:
        text += f" ({ratio['pairs']}/{ratio['reps']})"
    return text


def shows_below(c: dict) -> bool:
    return bool(c.get("below")) and c.get("median") == 0


def summarize(records: list[dict], scenarios: list[dict]) -> dict:
    summary = {}
    for scenario in scenarios:
        mine = [r for r in records if r["scenario"] == scenario["key"]]
        if not mine:
            continue
        servers = [s for s in scenario["servers"] if any(r["server"] == s for r in mine)]
        pairs = scenario.get("ratios", [(a, p) for a in PROJECTS for p in PEERS])
        pairs = [(a, b) for a, b in pairs if a in servers and b in servers]
        rows = []
        for title, kind, get, with_ratio in ROWS_BY_KIND[scenario["kind"]]:
            below_key = BELOW_KEYS.get(title)
            cells = {
                s: cell([r for r in mine if r["server"] == s], kind, get, below_key)
                for s in servers
            }
            if all(c["runs"] == 0 for c in cells.values()):
                continue
            ratios = (
                {f"{a}/{b}": paired_ratio(mine, kind, get, a, b) for a, b in pairs}
                if with_ratio
                else {}
            )
            for name, ratio in ratios.items():
                num, den = name.split("/")
                ratio["text"] = ratio_text(ratio, cells[num], cells[den])
            rows.append({"title": title, "kind": kind, "cells": cells, "ratios": ratios})
        notes = [
            f"{r['server']}: the joins' presence frames had not stopped after"
            f" {r['result'].get('join_settle_s')} s ({r['kind']} run, repetition {r['rep'] + 1});"
            " measured anyway"
            for r in mine
            if (r.get("result") or {}).get("join_settle_timed_out")
        ]
        summary[scenario["key"]] = {
            "notes": notes,
            "title": scenario["title"],
            "servers": servers,
            "pairs": pairs,
            "rows": rows,
        }
    return summary


# --- markdown ------------------------------------------------------------------------


def fmt(value) -> str:
    if value is None:
        return "-"
    if isinstance(value, list):
        return " + ".join(fmt(v) for v in value)
    if isinstance(value, float):
        if abs(value) >= 100:
            return f"{value:,.0f}"
        return f"{value:.3g}"
    if isinstance(value, int):
        return f"{value:,}"
    return str(value)


def fmt_cell(c: dict) -> str:
    if c["runs"] == 0:
        return ""
    if shows_below(c):
        text = f"<{fmt(max(c['below']))}"
    elif c["counted"] == 0:
        if any(str(stop).startswith("loadgen-bound") for stop in c.get("stops", [])):
            return "invalid (loadgen-bound)"
        return "invalid" if c["invalid_reasons"] else ("error" if c["errors"] else "-")
    else:
        text = fmt(c["median"])
    if c.get("lower_bound"):
        text = f"≥{text}"
    if c["counted"] < c["runs"]:
        text += f" ({c['counted']}/{c['runs']})"
    if c.get("below") and not shows_below(c):
        text += f" ({len(c['below'])} below {fmt(max(c['below']))})"
    return text


def markdown_tables(summary: dict) -> str:
    parts = []
    for key, scenario in summary.items():
        servers, pairs = scenario["servers"], scenario["pairs"]
        ratio_names = [f"{a}/{b}" for a, b in pairs]
        header = ["metric", *servers, *ratio_names]
        lines = [
            f"### {scenario['title']} (`{key}`)",
            "",
            "| " + " | ".join(header) + " |",
            "|" + "---|" + "---:|" * (len(header) - 1),
        ]
        notes: list[str] = []
        for row in scenario["rows"]:
            values = [fmt_cell(row["cells"][s]) for s in servers]
            ratios = [row["ratios"].get(n, {}).get("text", "") for n in ratio_names]
            lines.append("| " + " | ".join([row["title"], *values, *ratios]) + " |")
            for server in servers:
                c = row["cells"][server]
                if row["kind"] == "sweep" and row["title"].startswith("max sustained deliveries"):
                    stops = "; ".join(sorted({str(s) for s in c.get("stops", [])}))
                    if stops:
                        notes.append(f"{server}: sweep stopped: {stops}")
                for reason in sorted(set(c["invalid_reasons"])):
                    notes.append(f"{server}: {row['kind']} run invalid: {reason}")
                for error in sorted({str(e)[:200] for e in c["errors"]}):
                    notes.append(f"{server}: {row['kind']} run failed: {error}")
        lines.append("")
        notes += scenario.get("notes", [])
        for note in dict.fromkeys(notes):
            lines.append(f"- {note}")
        parts.append("\n".join(lines))
    return "\n\n".join(parts) + "\n"


def history_table(history: dict | None) -> str:
    if not history:
        return ""
    if "error" in history:
        return f"### History API\n\nFailed: {history['error']}\n"
    seed = history.get("seed", {})
    lines = [
        "### History API at 1,000,000 messages (`history`)",
        "",
        f"Room `{seed.get('room')}`, ids {fmt(seed.get('first_id'))}..{fmt(seed.get('last_id'))},"
        f" page_size {history.get('page_size')}. One keep-alive client on loopback, "
        "sequential. At the server: the project's request log (`duration_ms`, Django's "
        "middleware in to response out, in the Daphne process), matched by request id. HTTP: "
        "measured at the client (adds Daphne's parsing and the loopback round trip). "
        "In-process: Django's test client against the same database (the Django/DRF stack and "
        "PostgreSQL, without Daphne).",
        "",
        "| page | server p50 ms | server p99 ms | HTTP p50 ms | HTTP p99 ms "
        "| in-process p50 ms | in-process p99 ms | SQL queries | results |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for name, page in history.get("pages", {}).items():
        h, p = page["http_loopback_ms"], page["in_process_ms"]
        s = page.get("server_ms", {})  # absent in runs before the server's log was read
        lines.append(
            f"| {name} | {fmt(s.get('p50'))} | {fmt(s.get('p99'))} "
            f"| {fmt(h['p50'])} | {fmt(h['p99'])} | {fmt(p['p50'])} | {fmt(p['p99'])} "
            f"| {p['queries']} | {fmt(h['results_per_page'])} |"
        )
    lines.append("")
    constant = "yes" if history.get("constant_query_count") else "no"
    lines.append(f"Constant query count across pages: {constant}.")
    return "\n".join(lines) + "\n"
