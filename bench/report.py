"""``python -m bench.report``: the saved results as ``bench/results/README.md`` and plots.

Reads what the benches saved with ``--save`` (bench.saved: ``bench/results/
<scenario>.json``), and writes tables and PNG plots (matplotlib, no display needed)
next to them:

- ``e2e_latency_cdf.png``: COMMIT → searchable per offered rate (CDF);
- ``e2e_throughput.png``: achieved against offered changes/s, writer and the
  emulator's made-up changes, with the raw ``_bulk`` ceiling as a line;
- ``e2e_rss.png``: resident memory of the producer and consumers over time;
- ``consumers_scaling.png``: drain rate against consumer count, each run's own
  ceiling measured right before it as a line;
- ``<scenario>_*.png``: the same three e2e plots for a run with another tick and
  refresh interval (the low-latency profile).

A scenario that was not saved is left out and named at the top of the page. Nothing
is measured here: every figure comes from a saved file, with its command and machine.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")  # files only: no display on a server
import matplotlib.pyplot as plt

from bench.saved import RESULTS

__all__ = ["main", "render"]

SCENARIOS = {
    "e2e_sustained_load": "python -m bench.e2e --save --synthetic-rates 5000,20000,50000",
    "backlog_drain_to_searchable": "python -m bench.drain --save",
    "consumers_drain_backlog": (
        "python -m bench.consumers --save --counts 1,2,3,4,5,6 --partitions 8,4,16 --repeat 2"
    ),
    "consumers_drain_backlog_opensearch_own_cpu": (
        "python -m bench.consumers --save --opensearch-cpus 0 --counts 1,2,3 --partitions 8 "
        "--repeat 2 --live-seconds 0"
    ),
    "raw_bulk_ceiling": "python -m bench.ceiling --save",
    "scale_topologies": "python -m bench.scale --save --events 150000",
    "e2e_sustained_load_tick100ms_refresh200ms": (
        "python -m bench.e2e --save --tick-ms 100 --refresh-interval 200ms --rates 1000 "
        "--synthetic-rates 20000"
    ),
    "producer_headroom": "python -m bench.headroom --save",
    "emulator_memory": "python -m bench.emulator_memory --save",
    "emulator_memory_traced": (
        "python -m bench.emulator_memory --save --frames 3 --synthetic-rate 0"
    ),
}


def _ms(value: Any) -> str:
    return "–" if value is None else f"{value:,.0f}"


def _machine(result: dict[str, Any]) -> str:
    m = result.get("machine", {})
    return (
        f"{m.get('cpus')} cores, {m.get('memory_gib')} GiB, Python {m.get('python')}, "
        f"Redis {m.get('redis')}, PostgreSQL {m.get('postgresql')}, "
        f"OpenSearch {m.get('opensearch')}; commit {m.get('commit')}, {m.get('measured_at')}"
    )


def _header(result: dict[str, Any], title: str) -> list[str]:
    return [f"## {title}", "", f"`{result.get('command')}` — {_machine(result)}", ""]


def _e2e(result: dict[str, Any], out: Path) -> list[str]:
    title = "The whole pipeline under sustained load (bench.e2e)"
    if result.get("scenario", E2E) != E2E:
        title = (f"The same, emulator tick {result['emulator_tick_ms']} ms and refresh "
                 f"{result['refresh_interval']} (bench.e2e)")  # fmt: skip
    lines = _header(result, title)
    lines += [
        f"Emulator tick {result['emulator_tick_ms']} ms, refresh interval "
        f"{result['refresh_interval']}, {result['consumers']} consumers, "
        f"{result['partitions']} partitions, {result['orders']:,} orders in the view. "
        f"Latencies in ms. *searchable*: PostgreSQL COMMIT → `_search` finds it; *by id*: "
        f"→ `mget` returns it; *added*: the pipeline-added latency, the change's "
        f"timestamp's first row reaching the producer → its bulk acknowledged; *ts → "
        f"ack*: its Materialize timestamp → acknowledged (adds the emulator's hand-out); "
        f"*split*: the searchable latency at the change's timestamp, COMMIT → ts (the "
        f"tick's wait, the emulator's capture) and ts → searchable (pipeline, refresh, "
        f"the bench's poll), p50 / p95 each.",
        "",
        "| source | offered/s | achieved/s | searchable p50 / p95 / p99 | split: COMMIT → ts "
        "· ts → searchable | by id p50 / p95 | added p50 / p95 / p99 "
        "| ts → ack p50 / p95 / p99 | buffer max | limit |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for rate in [*result["rates"], *result.get("synthetic", [])]:
        s, b, a = rate.get("searchable", {}), rate.get("retrievable_by_id", {}), rate[
            "ts_to_acknowledged"]  # fmt: skip
        d = rate.get("pipeline_added", {})  # absent in results saved before bench.arrivals
        split = rate.get("searchable_split", {})  # absent before it was measured
        c, t = split.get("commit_to_ts", {}), split.get("ts_to_searchable", {})
        lines.append(
            f"| {rate['source']} | {rate['offered_per_s']:,.0f} | {rate['achieved_per_s']:,.1f} "
            f"| {_ms(s.get('p50_ms'))} / {_ms(s.get('p95_ms'))} / {_ms(s.get('p99_ms'))} "
            f"| {_ms(c.get('p50_ms'))} / {_ms(c.get('p95_ms'))} · "
            f"{_ms(t.get('p50_ms'))} / {_ms(t.get('p95_ms'))} "
            f"| {_ms(b.get('p50_ms'))} / {_ms(b.get('p95_ms'))} "
            f"| {_ms(d.get('p50_ms'))} / {_ms(d.get('p95_ms'))} / {_ms(d.get('p99_ms'))} "
            f"| {_ms(a.get('p50_ms'))} / {_ms(a.get('p95_ms'))} / {_ms(a.get('p99_ms'))} "
            f"| {rate['buffer_max']:,} | {rate['limit'] or '–'} |"
        )
    lines += ["", "CPU seconds and max RSS (MB) per process, per measured window:", ""]
    names = sorted({n for r in result["rates"] for n in r["processes"]})
    lines += ["| offered | " + " | ".join(names) + " |", "|---" * (len(names) + 1) + "|"]
    for rate in [*result["rates"], *result.get("synthetic", [])]:
        cells = [
            f"{p['cpu_s']} s / {p['max_rss_mb']}" if (p := rate["processes"].get(n)) else "–"
            for n in names
        ]
        lines.append(f"| {rate['offered']} | " + " | ".join(cells) + " |")
    baseline = result["baseline"]
    lines += [
        "",
        f"Raw `_bulk` ceiling of the node in the same run: {baseline['events_per_s']:,.0f} "
        f"docs/s ({baseline['connections']} connections).",
        "",
        f"![latency]({_plot(result, 'latency_cdf')}) "
        f"![throughput]({_plot(result, 'throughput')}) ![rss]({_plot(result, 'rss')})",
        "",
    ]
    _plot_e2e(result, out)
    return lines


def _plot(result: dict[str, Any], kind: str) -> str:
    """``e2e_<kind>.png`` for the default profile, ``<scenario>_<kind>.png`` for another."""
    scenario = result.get("scenario", E2E)
    return f"e2e_{kind}.png" if scenario == E2E else f"{scenario}_{kind}.png"


def _plot_e2e(result: dict[str, Any], out: Path) -> None:
    fig, ax = plt.subplots(figsize=(7, 4))
    for rate in result["rates"]:
        cdf = rate["searchable"].get("cdf_ms")
        if cdf:
            label = f"{rate['achieved_per_s']:,.0f}/s ({rate['offered']} offered)"
            ax.plot(cdf, [q / 100 for q in range(len(cdf))], label=label)
    ax.set(xlabel="COMMIT → searchable (ms)", ylabel="fraction of changes",
           title="Searchable latency (CDF)")  # fmt: skip
    ax.grid(alpha=0.3)
    ax.legend()
    fig.tight_layout()
    fig.savefig(out / _plot(result, "latency_cdf"), dpi=100)
    plt.close(fig)

    fig, ax = plt.subplots(figsize=(7, 4))
    for source in ("writer", "emulator (synthetic)"):
        runs = [r for r in [*result["rates"], *result.get("synthetic", [])]
                if r["source"] == source]  # fmt: skip
        if runs:
            ax.plot([r["offered_per_s"] for r in runs], [r["achieved_per_s"] for r in runs],
                    "o-", label=f"achieved, {source}")  # fmt: skip
    ax.axhline(result["baseline"]["events_per_s"], color="grey", linestyle="--",
               label="raw _bulk ceiling")  # fmt: skip
    ax.set(xscale="log", yscale="log", xlabel="offered changes/s",
           ylabel="achieved changes/s", title="Throughput")  # fmt: skip
    ax.grid(alpha=0.3)
    ax.legend()
    fig.tight_layout()
    fig.savefig(out / _plot(result, "throughput"), dpi=100)
    plt.close(fig)

    fig, ax = plt.subplots(figsize=(7, 4))
    offset = 0.0
    for rate in [*result["rates"], *result.get("synthetic", [])]:
        series = rate["series"]
        for name in sorted(series[0]["rss_mb"]) if series and "rss_mb" in series[0] else []:
            if name == "producer" or name.startswith("consumer"):
                ax.plot([offset + s["t"] for s in series], [s["rss_mb"][name] for s in series],
                        color={"producer": "C0"}.get(name, "C1"), linewidth=1)  # fmt: skip
        offset += series[-1]["t"] + 5 if series else 0
    ax.set(xlabel="seconds (measured windows one after another)", ylabel="RSS (MB)",
           title="Memory: producer (blue) and consumers (orange)")  # fmt: skip
    ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(out / _plot(result, "rss"), dpi=100)
    plt.close(fig)


def _drain(result: dict[str, Any], _out: Path) -> list[str]:
    lines = _header(result, "A backlog waiting in the emulator → searchable (bench.drain)")
    baseline = result["baseline"]
    by = ", ".join(
        f"{r['connections']}: {r['events_per_s']:,.0f}" for r in baseline["by_connections"]
    )
    lines += [
        f"{result['events']:,} orders searchable in {result['seconds']} s: "
        f"**{result['events_per_s']:,.0f} docs/s**, ratio **{result['ratio']}** against the "
        f"raw `_bulk` ceiling of {baseline['events_per_s']:,.0f} docs/s (by connections: "
        f"{by}). Max RSS of the producer and consumers {result['max_rss_mb']} MB.",
        "",
    ]
    return lines


def _cpus(cpus: list[int]) -> str:
    return ",".join(str(cpu) for cpu in cpus)


def _consumers(result: dict[str, Any], out: Path) -> list[str]:
    title = "Consumers draining entries from Redis (bench.consumers)"
    if "placement" in result:
        place = result["placement"]
        title = (
            f"The same with OpenSearch on CPU {_cpus(place['opensearch'])}, the rest on CPU "
            f"{_cpus(place['consumers_redis_and_client'])} (bench.consumers --opensearch-cpus)"
        )
    lines = _header(result, title)
    per_ts = result.get("changes_per_ts", 1)  # results saved before it wrote one a change
    layout = (
        f"{per_ts:,} changes a timestamp, grouped into entries as the producer groups them"
        f" ({result['entries']:,} entries)"
        if per_ts > 1
        else "one entry a change"
    )
    lines += [
        f"The backlog: {result['events']:,} changes, {layout}. "
        "CPU µs a document: the consumers (their start-up included), OpenSearch and Redis "
        "during the drain; OpenSearch's during the ceiling run right before it.",
        "",
        "| consumers | bulk | docs/s | ceiling right before | ratio "
        "| CPU µs/doc consumers / OpenSearch / Redis | OpenSearch in the ceiling |",
        "|---|---|---|---|---|---|---|",
    ]
    for run in result["runs"]:
        cpu, ceiling_cpu = run.get("cpu_us_per_doc", {}), run.get("baseline_cpu_us_per_doc", {})
        lines.append(
            f"| {run['consumers']} | {run['bulk_size']} | {run['events_per_s']:,.0f} "
            f"| {run['baseline_events_per_s']:,.0f} | {run['ratio']} "
            f"| {cpu.get('consumers', '–')} / {cpu.get('opensearch', '–')} / "
            f"{cpu.get('redis', '–')} | {ceiling_cpu.get('opensearch', '–')} |"
        )
    if "by_partitions" in result:
        lines += ["", "| partitions | best consumers | docs/s | ratio |", "|---|---|---|---|"]
        for row in result["by_partitions"]:
            lines.append(
                f"| {row['partitions']} | {row['best_consumers']} "
                f"| {row['events_per_s']:,.0f} | {row['ratio']} |"
            )
    profile = result.get("profile")
    if profile:
        lines += ["", f"One consumer under cProfile ({profile['events_per_s']:,.0f} docs/s "
                  "with the profiler on), own time:", "",
                  "| own % | own s | function |", "|---|---|---|"]  # fmt: skip
        lines += [f"| {t['own_pct']} | {t['own_s']} | `{t['function']}` |" for t in profile["top"]]
    plot = "consumers_scaling" + ("_opensearch_own_cpu" if "placement" in result else "") + ".png"
    lines += ["", f"![scaling]({plot})", ""]
    runs = [r for r in result["runs"] if r["bulk_size"] == result["runs"][0]["bulk_size"]]
    counts = sorted({r["consumers"] for r in runs})  # the median of each count's rounds

    def median_of(field: str) -> list[float]:
        return [statistics.median(r[field] for r in runs if r["consumers"] == n) for n in counts]

    fig, ax = plt.subplots(figsize=(7, 4))
    ax.plot(counts, median_of("events_per_s"), "o-", label="consumers")
    ax.plot(counts, median_of("baseline_events_per_s"), "--",
            color="grey", label="raw _bulk ceiling, measured right before")  # fmt: skip
    ax.set(xlabel="consumer processes", ylabel="docs/s", title="Drain rate against consumers")
    ax.set_ylim(bottom=0)
    ax.grid(alpha=0.3)
    ax.legend()
    fig.tight_layout()
    fig.savefig(out / plot, dpi=100)
    plt.close(fig)
    return lines


def _scale(result: dict[str, Any], _out: Path) -> list[str]:
    lines = _header(result, "Drain rate against Redis masters and OpenSearch nodes (bench.scale)")
    start, end = result["load_average"]["start"], result["load_average"]["end"]
    lines += [
        f"**{result['note']}.** Box load average (1/5/15 min) {start} at the start, {end} at "
        f"the end; all cores {result['box_cpu_busy_pct']} % busy over the whole run "
        f"({result['wall_s']} s). Private nodes started by the bench, "
        f"{result['partitions']} partitions, bulk {result['bulk_size']}, "
        f"{result['events']:,} entries of {result['mean_document_bytes']} bytes, OpenSearch "
        f"heap {result['heap']} a node; one node: 1 shard, 0 replicas; three: 3 shards, "
        "1 replica. Ceiling: the raw `_bulk` rate of the same OpenSearch topology measured "
        "right before the drain (best of 1–4 connections in brackets). Busy: all cores "
        "over the drain (100 % = both). CPU s: the consumers, the Redis nodes, the "
        "OpenSearch JVMs over the drain."
        + "".join(
            f" Redis memory an entry, {t['redis_masters']} master(s): "
            f"{t['redis_bytes_per_entry']} bytes."
            for t in result["topologies"]
            if "redis_bytes_per_entry" in t and t["opensearch_nodes"] == 1
        ),
        "",
        "| Redis masters | OpenSearch nodes | consumers | docs/s | ceiling (sweep best) | ratio "
        "| busy % | CPU s consumers / Redis / OpenSearch | CPU µs/doc consumers / Redis / "
        "OpenSearch |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for row in result["rows"]:
        cpu, per = row["cpu_s"], row["cpu_us_per_doc"]
        lines.append(
            f"| {row['redis_masters']} | {row['opensearch_nodes']} | {row['consumers']} "
            f"| {row['events_per_s']:,.0f} | {row['ceiling_events_per_s']:,.0f} "
            f"({row['ceiling_best_of_sweep']:,.0f}) | {row['ratio']} "
            f"| {row['box_cpu_busy_pct']} "
            f"| {cpu['consumers']} / {cpu['redis']} / {cpu['opensearch']} "
            f"| {per['consumers']} / {per['redis']} / {per['opensearch']} |"
        )
    return [*lines, ""]


def _ceiling(result: dict[str, Any], _out: Path) -> list[str]:
    lines = _header(result, "The raw `_bulk` ceiling (bench.ceiling)")
    lines += ["| connections | docs/s |", "|---|---|"]
    lines += [
        f"| {r['connections']} | {r['events_per_s']:,.0f} |" for r in result["by_connections"]
    ]
    return [*lines, ""]


def _headroom(result: dict[str, Any], _out: Path) -> list[str]:
    lines = _header(result, "The producer's spread and its stable figure (bench.headroom)")
    lines += [
        f"{result['events']:,}-row backlog, {result['rounds']} rounds, conditions interleaved; "
        "median (min–max, coefficient of variation) over the rounds.",
        "",
        "| condition | rows/s | producer CPU µs/row | baseline XADD/s | ratio "
        "| emulator µs/row | Redis µs/row |",
        "|---|---|---|---|---|---|---|",
    ]

    def cell(figure: dict[str, float], digits: int) -> str:
        return (f"{figure['median']:,.{digits}f} ({figure['min']:,.{digits}f}–"
                f"{figure['max']:,.{digits}f}, {figure['cv']:.2f})")  # fmt: skip

    for name, c in result["conditions"].items():
        lines.append(
            f"| {name} | {cell(c['events_per_s'], 0)} | {cell(c['producer_cpu_us_per_row'], 2)} "
            f"| {cell(c['baseline_xadd_per_s'], 0)} | {cell(c['ratio'], 2)} "
            f"| {cell(c['emulator_cpu_us_per_row'], 2)} | {cell(c['redis_cpu_us_per_row'], 2)} |"
        )
    return [*lines, ""]


def _memory_table(run: dict[str, Any]) -> list[str]:
    """The report's structures, then what the allocators hold, summing to the RSS."""
    report = run["report"]
    lines = ["| what | objects | MB | bytes each |", "|---|---|---|---|"]
    for s in report["structures"]:
        if s["mb"] or s["count"]:
            lines.append(
                f"| {s['name']} | {s['count']:,} | {s['mb']:,.1f} | {s['bytes_each']:,.0f} |"
            )
    walked = report["structures_mb"]
    pymalloc, glibc = report["allocator"]["pymalloc"], report["allocator"]["glibc"]
    rest = [("**the structures above**", walked)]
    if "allocated_blocks_mb" in pymalloc:
        rest += [
            ("other Python objects (modules, code, the interpreter's own; pymalloc's "
             "blocks in use less the structures)", pymalloc["allocated_blocks_mb"] - walked),
            ("free space inside pymalloc's arenas",
             pymalloc["available_blocks_mb"] + pymalloc.get("free_pools_mb", 0)),
        ]  # fmt: skip
    if glibc:
        rest.append(("glibc's heap in use and mmapped blocks (objects over 512 bytes, libpq)",
                     glibc["heap_in_use_mb"] + glibc["mmapped_mb"]))  # fmt: skip
    unaccounted = report["rss_mb"] - sum(mb for _, mb in rest)
    rest.append(("the rest of the RSS: the interpreter's code and libraries, stacks, free "
                 "heap pages glibc still holds", unaccounted))  # fmt: skip
    lines += [f"| {name} | | {mb:,.1f} | |" for name, mb in rest]
    lines.append(f"| **RSS when the report was written** | | **{report['rss_mb']:,.1f}** | |")
    return lines


def _emulator_memory(result: dict[str, Any], _out: Path) -> list[str]:
    lines = _header(result, "Where the emulator's memory goes (bench.emulator_memory)")
    lines += [
        "The emulator (devstack/mzemu) is the stand-in for Materialize, not the product. "
        "Its report (`MZEMU_TRACEMALLOC=<file>`, written on SIGUSR2; devstack/mzemu/memory.py)"
        " at the end of each run: the structures sized by walking them (a column value "
        "shared by several rows is split between them), then what the allocators hold "
        "(pymalloc and glibc's own statistics). The harness' emulator keeps 600 s of "
        "history for AS OF (`MZEMU_RETAIN_MS`; Materialize's default is 1 s, the compose "
        "view's `RETAIN HISTORY` 1 h).",
        "",
    ]
    drain = result.get("drain")
    if drain:
        report = drain["report"]
        lines += [
            f"**Backlog drain**: {drain['rows']:,} rows waiting, producer and 2 consumers "
            f"until `_count` equals the view ({drain['seconds']} s). RSS after loading the "
            f"view {drain['rss_loaded_mb']} MB, largest while draining {drain['rss_max_mb']} "
            f"MB, largest ever (VmHWM, the load's peak included) {report['rss_peak_mb']} MB.",
            "",
            *_memory_table(drain),
            "",
        ]
    synthetic = result.get("synthetic")
    if synthetic:
        report = synthetic["report"]
        counts = report["counts"]
        lines += [
            f"**Made-up changes**: {synthetic['orders']:,} orders synced, then "
            f"{synthetic['rate']:,} changes/s for {synthetic['seconds']:.0f} s (each a "
            f"retraction and an insertion). RSS after loading {synthetic['rss_loaded_mb']} "
            f"MB, synced {synthetic['rss_synced_mb']} MB, largest {synthetic['rss_max_mb']} "
            f"MB; the history held {counts['history_updates']:,} updates over "
            f"{counts['history_times']:,} timestamps.",
            "",
            *_memory_table(synthetic),
            "",
        ]
    return lines


def _emulator_memory_traced(result: dict[str, Any], _out: Path) -> list[str]:
    lines = _header(result, "The emulator's allocation sites (bench.emulator_memory, traced)")
    lines += [
        f"tracemalloc with {result['frames']} frames (it slows the emulator and adds its own "
        "memory to the RSS, so the RSS of this run is not the emulator's): the live "
        "allocations at the end of each run by the line that made them.",
        "",
    ]
    for name in ("drain", "synthetic"):
        run = result.get(name)
        if not run or not run["report"]["tracemalloc"].get("on"):
            continue
        traced = run["report"]["tracemalloc"]
        lines += [
            f"**{name}**: traced {traced['traced_mb']} MB now, {traced['traced_peak_mb']} MB "
            f"at the peak; tracemalloc's own {traced['own_mb']} MB.",
            "",
            "| MB | allocations | line |",
            "|---|---|---|",
        ]
        lines += [
            f"| {t['mb']:,.1f} | {t['count']:,} | `{t['where']}` |"
            for t in traced["top_lines"][:10]
        ]
        lines.append("")
    return lines


E2E = "e2e_sustained_load"
E2E_TUNED = "e2e_sustained_load_tick100ms_refresh200ms"

SECTIONS = {
    "e2e_sustained_load": _e2e,
    E2E_TUNED: _e2e,
    "producer_headroom": _headroom,
    "backlog_drain_to_searchable": _drain,
    "consumers_drain_backlog": _consumers,
    "consumers_drain_backlog_opensearch_own_cpu": _consumers,
    "raw_bulk_ceiling": _ceiling,
    "scale_topologies": _scale,
    "emulator_memory": _emulator_memory,
    "emulator_memory_traced": _emulator_memory_traced,
}


def render(results: Path) -> tuple[str, list[str]]:
    """The page for the saved files in ``results``, and the scenarios not saved there."""
    lines = [
        "# Measured",
        "",
        "Made by `python -m bench.report` from the files the benches saved (`--save`);",
        "every figure here is one of them. See the repository's README, Development, for",
        "what each bench does.",
        "",
    ]
    missing = []
    for scenario, section in SECTIONS.items():
        path = results / f"{scenario}.json"
        if not path.exists():
            missing.append(scenario)
            continue
        lines += section(json.loads(path.read_text()), results)
    if missing:
        lines[6:6] = [
            "Not saved yet (run these, then this report again): "
            + "; ".join(f"`{SCENARIOS[s]}`" for s in missing),
            "",
        ]
    return "\n".join(lines), missing


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="bench.report", description=__doc__.splitlines()[0])
    parser.add_argument("--results", type=Path, default=RESULTS)
    args = parser.parse_args(argv)
    if not args.results.is_dir():
        print(f"bench.report: no {args.results} (run a bench with --save first)", file=sys.stderr)
        return 1
    page, missing = render(args.results)
    (args.results / "README.md").write_text(page)
    print(f"wrote {args.results / 'README.md'}" + (f"; not saved: {missing}" if missing else ""))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
