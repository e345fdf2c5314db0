"""Writes bench/RESULTS.md from the recorded results, one named section per results file.

    python -m bench.report

A section is a function from its results JSON to markdown, registered in SECTIONS with the file it
reads; main() writes, in SECTIONS order, every section whose results file exists. To add one (say
the GPU throughput run), write `def gpu_section(result) -> str` and add
`Section("gpu", "gpu.json", gpu_section)` to SECTIONS.

Measured sections (engines, throughput, pipeline) show each figure as its median with the range
(min-max) and the number of runs, the command, the machine and its load average: the CI machine
is shared, so only ratios taken within one run compare across runs.
"""

from __future__ import annotations

import argparse
import json
import math
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

BENCH = Path(__file__).resolve().parent
RESULTS = BENCH / "results"
OUT = BENCH / "RESULTS.md"


def money(v: float | None) -> str:
    if v is None or (isinstance(v, float) and math.isnan(v)):
        return "\u2013"
    if v >= 1:
        return f"${v:,.2f}"
    if v >= 0.01:
        return f"${v:.3f}"
    return f"${v:.4f}"


def minutes(seconds: float | None) -> str:
    if seconds is None or (isinstance(seconds, float) and math.isnan(seconds)):
        return "\u2013"
    return f"{seconds / 60:.1f} min"


def table(head: list[str], rows: list[list[Any]]) -> str:
    out = ["| " + " | ".join(head) + " |", "| " + " | ".join("---" for _ in head) + " |"]
    out += ["| " + " | ".join(str(c) for c in row) + " |" for row in rows]
    return "\n".join(out)


def provenance(result: dict[str, Any]) -> str:
    m = result["machine"]
    gpu = f", {m['gpu']}" if m.get("gpu") else ""
    text = (
        f"Recorded {result.get('when') or result.get('date')} with `{result['command']}` on {m['cpu']} "
        f"({m['cores']} cores{gpu}, Python {m['python']})."
    )
    load = result.get("load_average")
    if isinstance(load, dict) and load.get("start"):
        text += (
            f" Load average (1/5/15 min) {'/'.join(f'{x:g}' for x in load['start'])} at the start, "
            f"{'/'.join(f'{x:g}' for x in load['end'])} at the end."
        )
    return text


def spread(s: dict[str, Any] | None, fmt: str = "{:.2f}", unit: str = "", scale: float = 1.0) -> str:
    """A recorded figure as `median (min-max)` (an en dash); one run: just the value."""
    if not s:
        return "\u2013"
    med, lo, hi = (fmt.format(s[k] * scale) for k in ("median", "min", "max"))
    return f"{med}{unit}" if s["runs"] == 1 or lo == hi else f"{med}{unit} ({lo}\u2013{hi})"


def times(s: dict[str, Any] | None) -> str:
    """A ratio figure as `1.84x (1.70-1.90)` (a multiplication sign, an en dash)."""
    if not s:
        return "\u2013"
    return spread(s, "{:.2f}", "\u00d7")


# ---------------------------------------------------------------------------------------------
# cost


def _writes_note(inp: dict[str, Any]) -> str:
    """What the per-job figure counts of DynamoDB's writes (results from before the write model
    have none)."""
    writes = inp.get("dynamodb_writes")
    if not writes:
        return ""
    used = writes[writes["used"]]
    return (
        f" for a job held {inp['per_job_services_held_s'] / 60:.0f} min, of which DynamoDB writes "
        f"{used['per_job_held_10_min']:.0f} WRU ({used['fixed']:.0f} once, {used['per_beat']:.0f} a heartbeat, "
        f"{used['per_running_job_hour']:,.0f} per running job-hour; metered by `bench.writes`, section above: "
        "each load below counts them for its own held time)"
    )


def cost_section(result: dict[str, Any]) -> str:
    inp = result["inputs"]
    mix = inp["file_mix"]
    cold = inp["cold_start_mean_s"]
    parts = [
        "## Cost per audio hour (model)",
        "",
        provenance(result),
        "Prices: `bench/prices.json` (us-east-1; each figure with its `as_of` date and source; written offline "
        "from published prices, not read live: Spot figures are typical values that move, refresh them). "
        "Throughput: `bench/throughput.json`: **H100 figures are measured** (random weights with the real model "
        "dimensions, bare model, fp16, Nov 2026); **T4, A10G, L4 and L40S figures are estimates** scaled from the "
        "H100 by datasheet bandwidth and fp16 tensor TFLOPS (rule in the file). Each GPU's \u00d7 realtime is capped "
        "by what the instance's CPUs can decode and featurize "
        f"({inp['throughput']['host_xrt_per_vcpu']}\u00d7 realtime "
        f"per vCPU, measured on the CI machine, one vCPU reserved"
        + (f"; from {inp['throughput']['host_source']}" if inp["throughput"].get("host_source") else "")
        + ").",
        "",
        f"File mix: lognormal, median {mix['median_s'] / 60:.0f} min, sigma {mix['sigma']}, clipped "
        f"{mix['min_s']:.0f} s\u2013{mix['max_s'] / 3600:.0f} h: mean {mix['mean_s'] / 60:.1f} min, "
        f"{mix['mean_windows']} windows of 30 s, padding \u00d7{mix['padding']}. "
        f"Cold start (means, assumptions): Batch scheduling {cold['scheduling_not_billed']} s (not billed), boot + "
        f"ECS agent {cold['boot_and_ecs_agent']} s, image pull {cold['image_pull']} s, model load "
        f"{cold['model_load']} s: **{cold['billed_total']} s billed** per scale-from-zero, then "
        f"`idle_exit_s` = {inp['idle_exit_s']:.0f} s and a scale-in lag of {cold['scale_in_lag']} s "
        "after the last job. "
        f"Serverless per job {money(inp['per_job_services_usd'])}{_writes_note(inp)}; "
        f"fixed {money(inp['fixed_monthly_usd'])}/month.",
        "",
        "### Steady state (a full batch), large-v3-turbo",
        "",
    ]
    rows = []
    for r in result["steady_state"]:
        if r["model"] != "large-v3-turbo":
            continue
        rows.append(
            [
                r["instance"],
                r["gpu"],
                "faster-whisper (CT2)" if r["engine"] == "ctranslate2" else "PyTorch",
                "estimated" if r["estimated"] else "**measured**",
                f"{r['batch']:.0f}",
                f"{r['xrt_gpu']:.0f}\u00d7 / {r['xrt_host_cap']:.0f}\u00d7",
                f"{r['xrt_effective']:.0f}\u00d7",
                f"{money(r['spot']['per_gpu_hour'])} / {money(r['on_demand']['per_gpu_hour'])}",
                f"**{money(r['spot']['cost_per_audio_hour'])}**",
                money(r["on_demand"]["cost_per_audio_hour"]),
            ]
        )
    parts.append(
        table(
            [
                "instance",
                "GPU",
                "engine",
                "throughput",
                "batch",
                "GPU / host cap",
                "effective",
                "per GPU-hour Spot / OD",
                "Spot $/audio h",
                "on-demand $/audio h",
            ],
            rows,
        )
    )
    parts += ["", "large-v3 (the full decoder), same rule:", ""]
    rows = [
        [
            r["instance"],
            "CT2" if r["engine"] == "ctranslate2" else "PyTorch",
            "estimated" if r["estimated"] else "measured",
            f"{r['xrt_effective']:.0f}\u00d7",
            money(r["spot"]["cost_per_audio_hour"]),
            money(r["on_demand"]["cost_per_audio_hour"]),
        ]
        for r in result["steady_state"]
        if r["model"] == "large-v3"
    ]
    parts.append(table(["instance", "engine", "throughput", "\u00d7 realtime", "Spot", "on-demand"], rows))
    parts += [
        "",
        "### By load: cold starts and idle tails included (large-v3-turbo, faster-whisper, Poisson arrivals)",
        "",
        "All in = compute + serverless per job + fixed monthly; in brackets: compute only. "
        "p5.48xlarge is charged a whole instance while a single worker runs (low load) and per GPU when a busy "
        "fleet packs it.",
        "",
    ]
    instances = list(dict.fromkeys(r["instance"] for r in result["by_load"]))
    loads = sorted({r["jobs_per_day"] for r in result["by_load"]})
    rows = []
    for n in loads:
        row: list[Any] = [f"{n:,}"]
        for inst in instances:
            cell = []
            for spot in (True, False):
                r = next(
                    x
                    for x in result["by_load"]
                    if x["instance"] == inst
                    and x["jobs_per_day"] == n
                    and x["spot"] == spot
                    and x["engine"] == "ctranslate2"
                )
                c = r["cost_per_audio_hour"]
                cell.append(f"{money(c['all_in'])} ({money(c['compute'])})")
            row.append(" / ".join(cell))
        rows.append(row)
    parts.append(table(["jobs/day", *[f"{i} Spot / on-demand" for i in instances]], rows))
    share = [
        r
        for r in result["by_load"]
        if r["engine"] == "ctranslate2"
        and r["spot"]
        and r["jobs_per_day"] == loads[0]
        and r["instance"] == "g4dn.xlarge"
    ]
    if share:
        s = share[0]
        parts += [
            "",
            f"At {loads[0]} jobs/day on g4dn.xlarge, {s['overhead_share'] * 100:.0f} % of the billed GPU time is "
            f"cold start, idle tail and scale-in lag ({s['billed_seconds_per_job']:.0f} s billed per job for "
            f"{s['gpu_seconds_per_job']:.0f} s of transcription); the fixed monthly cost adds "
            f"{money(s['cost_per_audio_hour']['fixed_monthly'])} per audio hour.",
        ]
    parts += [
        "",
        "### Break-even against managed APIs (large-v3-turbo, faster-whisper, Spot, all in)",
        "",
        "Cell: the lowest volume (jobs/day, mean file ~10 min) from which Batchscribe is cheaper, and the price "
        "ratio (API ÷ ours) at steady load, compute only. Volumes are searched on a grid of 20 per decade; Amazon "
        "Transcribe is priced with its volume tiers at each volume. PyTorch-engine rows are in results/cost.json.",
        "",
    ]
    apis = list(dict.fromkeys(b["api"] for b in result["break_even"]))
    rows = []
    for api in apis:
        row = [api, money(next(b for b in result["break_even"] if b["api"] == api)["api_per_audio_hour_list"])]
        for inst in instances:
            b = next(
                x
                for x in result["break_even"]
                if x["api"] == api and x["instance"] == inst and x["spot"] and x["engine"] == "ctranslate2"
            )
            v = b["break_even_jobs_per_day"]
            when = "never" if v is None else f"≥ {v:,.0f}/day" if v >= 10 else f"≥ {v:.2g}/day"
            if b["break_even_jobs_per_day"] is not None and not b["cheaper_at_all_larger_volumes"]:
                when += " (not at every larger volume)"
            row.append(f"{when}, {b['ratio_at_steady_load']:,.0f}\u00d7")
        rows.append(row)
    parts.append(table(["API", "list $/audio h", *instances], rows))
    return "\n".join(parts) + "\n"


# ---------------------------------------------------------------------------------------------
# simulation


def simulation_section(result: dict[str, Any]) -> str:
    inp = result["inputs"]
    fw = inp["final_window_1m"]
    parts = [
        "## Scale simulation",
        "",
        provenance(result) + f" Wall time {result['wall_s']} s.",
        "A discrete-event model (SimPy) of the deployed system: Poisson arrivals, the scaler's own `plan()` every "
        "60 s and after each enqueue, Batch cold starts drawn from the assumptions in `bench/prices.json`, workers "
        "holding up to K jobs whose windows share one batch at the \u00d7 realtime of `bench/throughput.json` for that "
        "batch (estimated for the G-family GPUs), Spot interruptions (jobs given back, progress lost, Batch retries "
        "the worker), idle exit. Parameters and sources: the docstring of `bench/simulate.py`. "
        f"The 1 000 000 jobs/day row is a {fw['window_s'] / 3600:.1f} h sample of steady arrivals (the first "
        f"{fw['warmup_s'] / 60:.0f} min, scale-up from zero, left out of the percentiles and the steady cost); "
        "the search windows (simulated arrivals, warm-up) were: "
        + ", ".join(
            f"{int(n):,}/day {v['window_s'] / 3600:g} h ({v['warmup_s'] / 60:g} min)" for n, v in inp["windows"].items()
        )
        + ".",
        "",
        f"Recommended configuration per load: the cheapest (Spot, all in) of {len(inp['grid']['instances'])} instance "
        f"types \u00d7 K ∈ {inp['grid']['jobs_per_worker']} \u00d7 idle exit ({inp['grid']['idle_exit_s']}), quota "
        f"{inp['grid']['max_vcpus']}, whose steady p95 is at most 15 min.",
        "",
    ]
    rows = []
    for row in result["loads"]:
        r, c, a = row["result"], row["recommended"], row["analytic"]
        b = row["burst"]
        cost = r["cost_per_audio_hour"]["steady"]
        rows.append(
            [
                f"{row['jobs_per_day']:,}",
                f"{c['instance']}, K={c['jobs_per_worker']}, idle {c['idle_exit_s']:.0f} s, {c['max_vcpus']} vCPUs",
                f"{minutes(r['latency_s']['p50'])} / **{minutes(r['latency_s']['p95'])}** / "
                f"{minutes(r['latency_s']['p99'])}",
                f"{minutes(b['drain_s'])} ({b['jobs']:,} jobs)" if b else "\u2013",
                f"{r['gpu_utilisation']:.2f} / {r['busy_fraction']:.2f}"
                if r["gpu_utilisation"] is not None
                else "\u2013",
                f"{r['gpu_hours'] / (r['simulated_s'] / 86400):,.1f}",
                r["peak_vcpus"],
                f"**{money(cost['spot'])}** ({money(cost['spot_all_in'])})",
                f"{money(cost['on_demand'])} ({money(cost['on_demand_all_in'])})",
                money(a["compute"]),
            ]
        )
    parts.append(
        table(
            [
                "jobs/day",
                "recommended",
                "latency p50 / p95 / p99",
                "burst drain",
                "GPU util / busy",
                "GPU-h per day",
                "peak vCPUs",
                "Spot $/audio h (all in)",
                "on-demand (all in)",
                "cost model, Spot compute",
            ],
            rows,
        )
    )
    g = result["goals"]
    p, c = g["p95_1m_jobs_per_day"], g["cost_steady_spot_turbo"]
    t = c["pytorch_best"]
    tc = t["config"]
    cfg = p["config"]
    parts += [
        "",
        "Burst: one hour's volume (jobs/day ÷ 24) arriving within 60 s, same configuration, drain = burst start "
        "to last "
        "transcript. GPU utilisation = window-seconds transcribed ÷ what the billed GPU time could do at a full batch; "
        "busy = share of billed time with at least one job held. On-demand figures price the same billed time. "
        "The last column is `bench/cost.py`'s closed form for the same configuration: it takes a fleet above one busy "
        "worker as fully busy, so where the quota's minimum of two workers or its headroom leaves GPUs idle (10 000 "
        "jobs/day) the simulation is the figure to trust.",
        "",
        "### Goals",
        "",
        f"- **1 000 000 jobs/day with p95 ≤ 15 min within a stated vCPU quota: {'met' if p['met'] else 'NOT met'}.** "
        f"p95 {minutes(p['p95_s'])} with {cfg['instance']}, {cfg['jobs_per_worker']} jobs per worker, idle exit "
        f"{cfg['idle_exit_s']:.0f} s, a quota (compute environment maxvCpus) of **{p['max_vcpus']} vCPUs** "
        f"({cfg['max_workers']} workers; peak in use {p['peak_vcpus']}). {p['note']}. The deployment's default "
        "(`max_gpu_vcpus` 64, `max_gpu_workers` 8) is far below this: raise both, and the account's "
        "'All G and VT Spot Instance Requests' quota.",
        f"- **Cost per audio hour at steady load, large-v3-turbo, Spot ≤ $0.002: "
        f"{'met' if c['met_compute_only'] else 'NOT met'} for compute alone ({money(c['compute_only'])}), "
        f"{'met' if c['met_all_in'] else 'NOT met'} all in ({money(c['all_in'])})** with faster-whisper at the "
        "1 000 000 "
        f"jobs/day configuration. With a PyTorch engine at batch 128 (the measured H100 ceiling, scaled; the worker's "
        f"openai-whisper engine does not batch like that today), the best instance at 1 000 000 jobs/day (over the "
        "same long window) is "
        f"{tc['instance']} (K={tc['jobs_per_worker']}, {tc['max_vcpus']} vCPUs): {money(t['compute_only'])} compute "
        f"({'meets' if t['met_compute_only'] else 'misses'} $0.002), {money(t['all_in'])} all in "
        f"({'meets' if t['met_all_in'] else 'misses'}), p95 {minutes(t['p95_s'])} "
        f"({'within' if t['p95_met'] else '**not** within'} the 15 min goal). "
        "The serverless side (API Gateway, Lambda, S3, DynamoDB, SQS: ~$0.0007 per audio hour at a 10 min mean file) "
        "alone is a third of the $0.002 budget. "
        + (
            "The G-family throughput behind these figures is an estimate, not a measurement."
            if c["throughput_estimated"]
            else ""
        ),
        "",
        "### vCPU quota at 1 000 000 jobs/day",
        "",
        "Under sustained load the scaler (`ceil(backlog / K) \u2212 active`, backlog counting held jobs) keeps adding "
        "workers whenever any job waits, so the fleet grows to the quota: the quota, not the load, sets "
        "utilisation and cost.",
        "",
    ]
    rows = [
        [
            f"{r.get('quota_headroom', '?')}\u00d7",
            r["config"]["max_vcpus"],
            r["config"]["max_workers"],
            minutes(r["latency_s"]["p50"]),
            minutes(r["latency_s"]["p95"]) + (" (queue growing)" if r["latency_s"].get("growing") else ""),
            f"{r['gpu_utilisation']:.2f}",
            money(r["cost_per_audio_hour"]["steady"]["spot"]),
        ]
        for r in result["quota_sweep_1m"]
    ]
    parts.append(table(["quota ÷ mean need", "max vCPUs", "workers", "p50", "p95", "GPU util", "Spot $/audio h"], rows))
    parts += [
        "",
        "### PyTorch engine at 1 000 000 jobs/day (batch 128)",
        "",
        f"Search window ({inp['windows']['1000000']['window_s'] / 60:g} min of arrivals); the cheapest one meeting "
        "the p95 goal without a growing queue is rerun over the long window (last row).",
        "",
    ]
    rows = [
        [
            r["config"]["instance"],
            r["config"]["jobs_per_worker"],
            r["config"]["max_vcpus"],
            f"{minutes(r['latency_s']['p95'])} ({minutes(r['latency_s']['p95_first_third'])} / "
            f"{minutes(r['latency_s']['p95_last_third'])}){' growing' if r['latency_s']['growing'] else ''}",
            f"{r['gpu_utilisation']:.2f}",
            money(r["cost_per_audio_hour"]["steady"]["spot"]),
            money(r["cost_per_audio_hour"]["steady"]["spot_all_in"]),
        ]
        for r in [
            *result.get("pytorch_1m", []),
            *([result["pytorch_1m_final"]] if "pytorch_1m_final" in result else []),
        ]
    ]
    parts.append(
        table(["instance", "K", "max vCPUs", "p95 (first / last third)", "GPU util", "Spot $/audio h", "all in"], rows)
    )
    s = result["spot_stress"]
    parts += [
        "",
        "### Spot interruptions",
        "",
        f"At {s['load']['jobs_per_day']:,} jobs/day and {s['config']['interruption_rate_per_hour']} interruptions per "
        f"instance-hour ({s['load']['window_s'] / 3600:g} h of arrivals, recommended configuration): "
        f"{s['spot_interruptions']} interruptions, "
        f"{s['requeues']} jobs given back and redone, {s['completed']:,} of {s['jobs']:,} jobs completed, "
        f"each exactly once: **{s['completed_exactly_once']}**; p95 {minutes(s['latency_s']['p95'])}; most receives "
        f"of one job {s['max_receives']}, jobs reaching the queue's maxReceiveCount (would be dead-lettered): "
        f"{s['jobs_reaching_max_receive_count']}.",
        "",
        "### Plots",
        "",
    ]
    parts += [f"![{Path(p).stem}](results/{Path(p).name})" for p in result.get("plots", [])]
    return "\n".join(parts) + "\n"


# ---------------------------------------------------------------------------------------------
# engines (bench/bench_engines.py)


def engines_section(result: dict[str, Any]) -> str:
    variants = result["variants"]
    files = result["files"]
    base = result.get("baseline")
    parts = [
        f"## Engines, measured ({result['device']})",
        "",
        provenance(result) + f" Wall time {result['wall_s']:g} s.",
        f"`{result['model']}`, beam {result['beam_size']}, espeak speech, on the same machine in one run. Each variant "
        "runs in a child process of its own per round (its import, model load and memory are its own), warms up on "
        f"a short file, then transcribes each file; {result['repeats']} round(s), the variants' order rotating "
        "between rounds. Cells: median (min\u2013max) over rounds; ratios to openai-whisper are paired within a "
        "round (same load), then their median. Peak RSS: the process's resident high-water mark (VmHWM) while "
        "transcribing that file, reset between phases. CPU s: the process's CPU time over all its threads, less "
        f"disturbed by other load than wall time. OpenMP wait policy in the children: `{result['omp_wait_policy']}` "
        "(see `child_env` in bench_engines.py: with spinning waits, PyTorch's threads lose whole time slices on a "
        "busy machine).",
        "",
    ]
    parts += [f"- **{name}**: {row['description']}" for name, row in variants.items()]
    if "worker-batched" in variants:
        parts.append(
            f"  (batches of {result['worker_batch_size']} window(s), what `batchscribe transcribe` runs a file with on "
            "this device; segments timed by word alignment, each window decoded once; its timing "
            "includes the file's streaming decode, which the worker overlaps with batches; the others are timed on "
            "audio decoded beforehand)"
        )
    for name, meta in files.items():
        parts += ["", f"### {name} file ({meta['audio_seconds']:g} s of speech, {meta['words']} words)", ""]
        rows = []
        for v, row in variants.items():
            f = row["files"][name]
            vs = f["vs_openai_whisper"]
            rows.append(
                [
                    f"**{v}**" if v == base else v,
                    spread(f["wall_s"], unit=" s"),
                    spread(f["x_realtime"], "{:.1f}", "\u00d7"),
                    times(vs["x_realtime"]) if base else "\u2013",
                    spread(f["cpu_s"], unit=" s"),
                    times(vs["cpu_s"]) if base else "\u2013",
                    spread(f["peak_rss_mb"], "{:.0f}", " MB"),
                    times(vs["peak_rss_mb"]) if base else "\u2013",
                    f"{f['wer'] * 100:.1f} %",
                ]
            )
        parts.append(
            table(
                [
                    "variant",
                    "wall time",
                    "\u00d7 realtime",
                    "speed vs openai-whisper",
                    "CPU s",
                    "CPU vs openai-whisper",
                    "peak RSS",
                    "RSS vs openai-whisper",
                    "WER",
                ],
                rows,
            )
        )
    parts += ["", "### Start-up: import and model load", ""]
    rows = []
    for v, row in variants.items():
        vs = row["vs_openai_whisper"]
        rows.append(
            [
                f"**{v}**" if v == base else v,
                spread(row["import_s"], unit=" s"),
                spread(row["load_s"], unit=" s"),
                times(vs["load_s"]) if base else "\u2013",
                spread(row["loaded_rss_mb"], "{:.0f}", " MB"),
                spread(row["peak_rss_mb"], "{:.0f}", " MB"),
                times(vs["peak_rss_mb"]) if base else "\u2013",
            ]
        )
    parts.append(
        table(
            [
                "variant",
                "import",
                "load (import + model)",
                "load vs openai-whisper",
                "RSS after load",
                "process peak RSS",
                "peak vs openai-whisper",
            ],
            rows,
        )
    )
    return "\n".join(parts) + "\n"


# ---------------------------------------------------------------------------------------------
# cross-job batching on the local stack (bench/bench_throughput.py)


def throughput_section(result: dict[str, Any]) -> str:
    summary = result["summary"]
    modes = {r["mode"]: r for r in result["rounds"]}
    rows = [
        [
            mode,
            modes[mode]["held_jobs"] if mode in modes else "\u2013",
            modes[mode]["batch_size"] if mode in modes else "\u2013",
            spread({**s, "median": s["jobs_per_minute_median"]}, "{:.1f}"),
            s["runs"],
            f"{s['wer'] * 100:.1f} %",
        ]
        for mode, s in summary.items()
    ]
    device = "GPU" if "gpu" in result["machine"] else "CPU"
    return (
        "\n".join(
            [
                f"## Cross-job batching, one worker on the local stack ({device})",
                "",
                provenance(result)
                + ("" if result.get("load_average") else " (bench_throughput.py records no load average.)"),
                f"{result['jobs']} short espeak jobs ({result['speech_seconds']:g} s of speech in all), queued before "
                "the worker may start; jobs per minute from the first claim to the last commit (the stack's start and "
                "the model load are not counted); rounds alternate the modes. K = jobs a worker holds, B = windows per "
                "batch.",
                "",
                table(["mode", "K", "B", "jobs/min", "runs", "WER"], rows),
                "",
                "**Throughput ratio** (batched \u00f7 one at a time, medians): "
                f"**{result['throughput_ratio']:.2f}\u00d7**"
                + (" (below 1: batching was slower here)." if result["throughput_ratio"] < 1 else ".")
                + "".join(
                    f" {mode}: {r:.2f}\u00d7." for mode, r in (result.get("ratios") or {}).items() if mode != "batched"
                )
                + (
                    " Cross-job batching is meant for GPUs, where one window leaves most of the device idle; on a CPU "
                    "the cores are busy with one window already."
                    if device == "CPU" and not (result.get("packing") or {}).get("model_path_ratio")
                    else ""
                ),
                *_packing_lines(result),
            ]
        )
        + "\n"
    )


PACKING_VARIANTS = ("one_at_a_time", "unpacked", "packed", "packed_k_eq_b", "packed_all_held")


def _packing_lines(result: dict[str, Any]) -> list[str]:
    """Encoder seconds per speech second with window packing off and on (bench_throughput's
    in-process `packing()`), and the run this one replaced."""
    lines = []
    previous = result.get("previous") or []
    for run in previous if isinstance(previous, list) else [previous]:
        load = (run.get("load_average") or {}).get("start")
        packed = (run.get("encoder_per_speech") or {}).get("packed")
        lines += [
            "",
            f"Earlier run ({run['date']}, `{run['command']}`"
            + (f", load {'/'.join(f'{x:g}' for x in load)}" if load else "")
            + f"): **{run['throughput_ratio']:.2f}\u00d7**"
            + (f", encoder \u00f7 speech packed {packed:.2f}" if packed else "")
            + ".",
        ]
    packing = result.get("packing")
    if not packing:
        return lines
    rows = [
        [
            name,
            p["encoder_rows"],
            f"{p['encoder_seconds']:.0f} s",
            f"{p['speech_seconds']:.1f} s",
            f"**{p['encoder_per_speech']:.2f}**",
            f"{p['wer'] * 100:.1f} %",
            f"{p['seconds']:.1f} s",
        ]
        for name, p in ((n, packing[n]) for n in PACKING_VARIANTS if n in packing)
    ]
    for row, name in zip(rows, [n for n in PACKING_VARIANTS if n in packing], strict=True):
        p = packing[name]
        k, b = p.get("held_jobs", packing["held_jobs"]), p.get("batch_size", packing["batch_size"])
        kind = "one at a time" if name == "one_at_a_time" else name.split("_")[0]
        row[0] = f"{kind}, K = {k}, B = {b}"
    worse = packing.get("jobs_worse_packed") or []
    ratio = packing.get("model_path_ratio") or {}
    return [
        *lines,
        "",
        "### Window packing and the model path alone (in process)",
        "",
        "The same jobs through the worker's `Batches` in this process, without the stack: one at a time, then "
        "window packing (gpu_container/worker/packing.py) off and on: encoder seconds = 30 s per window row the "
        "encoder read (continuation passes and fallbacks included); seconds = wall time for all the jobs (the median "
        "of the rounds, the variants in turn within each).",
        "",
        table(
            [
                "windows, jobs held, rows a batch",
                "encoder rows",
                "encoder s",
                "speech s",
                "encoder \u00f7 speech",
                "WER",
                "seconds",
            ],
            rows,
        ),
        "",
        "Jobs whose WER is worse packed: " + (", ".join(worse) if worse else "none") + ".",
        *(
            [
                "",
                "**The model path's own ratio** (one at a time \u00f7 packed, the seconds above): "
                + ", ".join(f"**{v:.2f}\u00d7** {k.replace('_', ' ')}" for k, v in ratio.items())
                + ". On the local stack the same worker shares this machine's cores with the AWS stand-ins and the "
                "handlers, whose work per job batching does not shrink; that is the gap between this ratio and the "
                "one above.",
            ]
            if ratio
            else []
        ),
    ]


# ---------------------------------------------------------------------------------------------
# pipeline overhead (bench/bench_pipeline.py)

STAGES = {
    "create_s": "create: POST /jobs over HTTP",
    "upload_s": "upload: presigned POST to S3 (moto)",
    "upload_to_queued_s": "upload done \u2192 queued (S3 notification, uploads queue, on_upload)",
    "queued_to_claim_s": "queued \u2192 claim (the worker's long poll, the claim)",
    "upload_to_claim_s": "**upload done \u2192 claim**",
    "compute_s": "transcription (the job's compute_seconds)",
    "worker_overhead_s": "claim \u2192 commit minus transcription (download, probe, outputs, commit)",
    "commit_to_visible_s": "commit \u2192 first GET that shows succeeded (upper bound)",
    "end_to_end_s": "end to end: POST /jobs \u2192 GET shows succeeded",
    "end_to_end_minus_compute_s": "**end to end minus transcription**",
}


def pipeline_section(result: dict[str, Any]) -> str:
    api, st, setup = result["api"], result["stack"], result["setup"]
    parts = [
        "## Pipeline overhead on the local stack (CPU)",
        "",
        provenance(result) + f" Wall time {result['wall_s']:g} s.",
        "",
        "### API handler latency, in process",
        "",
        f"`lambdas.api.handler.handler` called with API Gateway proxy events against moto in the same process, "
        f"{api['rounds']} round(s) \u00d7 {api['calls_per_route_per_round']} timed calls per route (after "
        f"{api['warmup_calls']} warm-up calls), routes interleaved call by call. Included: Powertools routing and "
        "validation, the logic, boto3 and moto's own handling of each DynamoDB/S3 call. Not included: API Gateway, "
        "Lambda's invoke, network to the real services. Cells: the median of the rounds' percentiles (range); "
        "pooled: over all calls. GET /jobs lists the newest 20 of the caller's jobs, in a table that grows by one "
        f"job per call, to {api['calls_per_route_per_round'] + api['warmup_calls'] + 2} jobs in a round (moto's "
        "query cost grows with it; DynamoDB's does not).",
        "",
    ]
    rows = []
    for route, r in api["routes"].items():
        rows.append(
            [
                route,
                r["calls"],
                f"{r['aws_calls_per_request']:g}",
                spread(r["p50_ms"], "{:.1f}"),
                spread(r["p99_ms"], "{:.1f}"),
                f"{r['pooled']['p99_ms']:.1f} / {r['pooled']['max_ms']:.0f}",
                spread(r["cpu_p99_ms"], "{:.1f}"),
                spread(r["own_p50_ms"], "{:.1f}"),
                spread(r["own_p99_ms"], "{:.1f}"),
                f"{r['cold_first_call_ms']:.0f}",
            ]
        )
    parts.append(
        table(
            [
                "route",
                "calls",
                "AWS calls",
                "p50 ms",
                "p99 ms",
                "pooled p99 / max ms",
                "CPU p99 ms",
                "own p50 ms",
                "own p99 ms",
                "first call in process ms",
            ],
            rows,
        )
    )
    own_verdict = "met" if api["goal_met_own_work"] else "NOT met"
    parts += [
        "",
        "p50/p99: wall time of the whole call. CPU: the calling thread's CPU time (handler and moto both run on "
        "it; time spent waiting for a core while other processes run is not in it). Own: wall time minus the time "
        "inside AWS SDK calls (botocore + moto), i.e. routing, validation, the logic, the JSON and the presigning.",
        "",
        f"Goal: p99 \u2264 {api['goal_p99_ms']:g} ms on every route, in process: "
        f"**{'met' if api['goal_met'] else 'NOT met'}** with moto in the loop (worst pooled p99 "
        f"{api['worst_pooled_p99_ms']:.1f} ms"
        + (
            ": moto's handling of the DynamoDB calls dominates, and grows with its table (and its "
            "stream, which moto copies with the table in every transaction, such as a create with an "
            "Idempotency-Key)"
            if api["worst_own_p99_ms"] < api["worst_pooled_p99_ms"] / 2
            else ""
        )
        + f"); the handler's own work: **{own_verdict}** (worst p99 {api['worst_own_p99_ms']:.1f} ms). Deployed, "
        "each AWS call is a network round trip to DynamoDB or S3 instead of moto's in-process work; this run does "
        "not measure those.",
        "",
        "### One job at a time, warm worker",
        "",
        f"The local stack (`LocalConfig`, {setup['timings']}), every worker warmed by a job first; one job at a time "
        f"({setup['speech_file']}) submitted with the client, then GET every {setup['poll_s'] * 1000:g} ms until it "
        "succeeded; the stages from the job's own timestamps (one machine clock, ms precision). "
        f"{st['isolated_jobs']} jobs over all rounds.",
        "",
    ]
    if st["isolated"]:
        rows = [
            [label, spread(st["isolated"][k], "{:.0f}", scale=1000), st["isolated"][k]["runs"]]
            for k, label in STAGES.items()
            if k in st["isolated"]
        ]
        parts.append(table(["stage", "ms: median (min\u2013max)", "jobs"], rows))
        u = st["isolated"]["upload_to_claim_s"]
        p95 = st.get("upload_to_claim_p95_s")
        verdict = (
            "met for every job"
            if st["goal_met_every_job"]
            else "met at p95, not for every job"
            if st.get("goal_met_p95")
            else "NOT met at p95"
        )
        parts += [
            "",
            f"Goal: upload done \u2192 claim \u2264 {st['goal_upload_to_claim_s']:g} s at p95 (warm worker): "
            f"**{verdict}** (median {u['median'] * 1000:.0f} ms"
            + (f", p95 {p95 * 1000:.0f} ms" if p95 is not None else "")
            + f", max {u['max'] * 1000:.0f} ms). **{st.get('late_claims', 0)} of {st['isolated_jobs']} jobs** were "
            "claimed \u2265 4 s after they were queued. The intake records the job as queued *before* it sends "
            "its message (`batchscribe/intake.py`), so the worker that receives the message claims at once; "
            "a message lost in between is the sweeper's to re-send. (Until December 2026 it sent first, and an "
            "idle worker that received the message before the flip put it back for 5 s: 8 of 24 jobs paid "
            "that.) The local stack's 1 s timings (`Timings.local()`: poll 1 s, scaler every 1 s) do not bound "
            "upload \u2192 claim: the uploads poller and the idle worker wait in SQS long polls, which moto "
            "answers the moment a message arrives. From zero workers, the scaler's tick and the worker "
            "process's start are on the path: "
            f"{spread(st['cold_upload_to_claim_s'], '{:.2f}', ' s')} from upload to claim (first job of each stack; "
            "the model loads after the claim).",
        ]
    parts += [
        "",
        "### Jobs per minute with 1 and 2 workers",
        "",
        f"Per stack round, after the isolated jobs: {result['rounds'][0]['throughput']['jobs']} jobs submitted back "
        f"to back; jobs per minute from the first POST /jobs to the last commit (and from the first claim). Workers "
        f"hold up to K = {setup['worker_held_jobs']} jobs, batches of B = {setup['worker_batch_size']} windows "
        f"(the CPU defaults). Rounds in the order {setup['order']}.",
        "",
    ]
    rows = [
        [
            w,
            r["rounds"],
            spread(r["jobs_per_minute"], "{:.1f}"),
            spread(r["claim_to_commit_jobs_per_minute"], "{:.1f}"),
            spread(r["upload_to_claim_s"], "{:.0f}", scale=1000) if r["upload_to_claim_s"] else "\u2013",
            f"{r['late_claims']} of {r['isolated_jobs']}" if "late_claims" in r else "\u2013",
            spread(r["end_to_end_minus_compute_s"], "{:.0f}", scale=1000)
            if r["end_to_end_minus_compute_s"]
            else "\u2013",
        ]
        for w, r in st["by_workers"].items()
    ]
    parts.append(
        table(
            [
                "workers",
                "rounds",
                "jobs/min (POST \u2192 last commit)",
                "jobs/min (first claim \u2192 last commit)",
                "upload \u2192 claim ms",
                "late claims (\u2265 4 s)",
                "end to end minus transcription ms",
            ],
            rows,
        )
    )
    if "two_vs_one_worker_ratio" in st:
        parts += [
            "",
            f"2 workers \u00f7 1 worker, rounds paired in time: **{times(st['two_vs_one_worker_ratio'])}**. Both "
            "workers share the machine's cores (each runs CTranslate2 with 2 threads): a second worker can overlap "
            "one job's waits (download, commit, the 5 s give-back above) with another's transcription; it adds no "
            "compute.",
        ]
    return "\n".join(parts) + "\n"


# ---------------------------------------------------------------------------------------------
# DynamoDB writes per job


def _projection_label(proj: str, rows: dict[str, Any]) -> str:
    if proj == "all":
        return "every attribute"
    same = rows.get("all", {}).get("wru_by_step") == rows[proj]["wru_by_step"]
    return "every attribute (as declared then)" if same else "as declared"


def writes_section(result: dict[str, Any]) -> str:
    """bench/results/writes.json: WRU of one job's life per design (the heartbeats before and
    after issue 20) and per index projection."""
    parts = [
        "## DynamoDB writes per job (metered)",
        "",
        "`python -m bench.writes` runs one job's life through the real repository on moto with an injected "
        "clock (create, enqueue, claim and its counter, a heartbeat every 5 s, commit) and bills each write by "
        "DynamoDB's rules from the item before and after: the table by the larger size in 1 KB units; each index "
        "nothing when neither its key nor an attribute it carries changed, one write to put, delete or update an "
        "entry, two when its key moved. moto reports no capacity: these are the rules applied to what the code "
        "writes, not a bill. `bench.cost` counts them per job from the time a worker holds it.",
        "",
    ]
    rows = []
    for design, entry in result["designs"].items():
        seen: list[Any] = []
        for proj, row in entry["projections"].items():
            if row["wru_by_step"] in seen:  # the same table (nothing was declared yet)
                continue
            seen.append(row["wru_by_step"])
            life = row["life"]
            by_index = row["index_writes_by_step"].get("heartbeat", {})
            beats = {int(k): n for k, n in row["heartbeat_wru"].items()}
            usual = max(beats, key=lambda w: beats[w])
            fixed = row["wru_per_job"] - sum(w * n for w, n in beats.items())
            per_hour = sum(w * n for w, n in beats.items()) * 3600 / life["held_s"]
            rows.append(
                [
                    f"**{design}**" if design == "after" and proj == "declared" else design,
                    _projection_label(proj, entry["projections"]),
                    entry["commit"],
                    fixed,
                    ", ".join(f"{w} \u00d7 {n}" for w, n in sorted(beats.items())),
                    " + ".join(f"{k} {v}" for k, v in by_index.items()),
                    row["wru_per_job"],
                    f"{per_hour:,.0f}",
                    f"{usual}",
                ]
            )
    parts.append(
        table(
            [
                "heartbeats",
                "index projections",
                "commit",
                "WRU once a job",
                "WRU a beat \u00d7 beats (10 min)",
                "beats' WRU: table + indexes",
                "WRU per job held 10 min",
                "WRU per running job-hour",
                "usual beat",
            ],
            rows,
        )
    )
    parts += [""]
    for design, entry in result["designs"].items():
        machine = entry["machine"]
        parts.append(
            f"- **{design}**: {entry['note']} (metered {entry['when']} at commit {entry['commit']} with "
            f"`python -m bench.writes --design {design}` on {machine['cpu']}, {machine['cores']} cores, "
            f"Python {machine['python']})"
        )
    return "\n".join(parts) + "\n"


def timestamp_rules_section(result: dict[str, Any]) -> str:
    """openai-whisper's timestamp rules per decoding step: the library's loop over rows against
    the worker's rules over the batch (bench/bench_timestamp_rules.py)."""
    machine, load = result["machine"], result["load_average"]
    parts = [
        f"## openai-whisper timestamp rules per decoding step ({result['device']})",
        "",
        f"Recorded {result['date']} with `{result['command']}` on {machine['cpu']} ({machine['cores']} cores, "
        f"Python {machine['python']}). Load average {'/'.join(map(str, load['start']))} at the start. "
        f"Median over alternating steps in one process; random logits over tiny.en's vocabulary after "
        f"{result['history']} decoded tokens. Both compute the same log-softmax over the whole batch (the rule "
        "that prefers a timestamp when their total probability wins), which is most of a step on a CPU; the "
        "loop's cost that the batched rules remove is per row: Python work and, on a GPU, a GPU\u2192CPU sync "
        "per row and step (not measured here: no GPU was lent).",
        "",
        table(
            ["batch", "per-row loop (ms/step)", "batched (ms/step)", "speed-up"],
            [
                [r["batch"], f"{r['loop_ms_per_step']:.2f}", f"{r['batched_ms_per_step']:.2f}", f"{r['speedup']}\u00d7"]
                for r in result["rows"]
            ],
        ),
    ]
    return "\n".join(parts) + "\n"


# ---------------------------------------------------------------------------------------------


def short_behind_long_section(result: dict[str, Any]) -> str:
    """bench/results/short-behind-long-cpu.json: a short job joining a CPU worker's long file,
    per batch size (bench/bench_short_behind_long.py)."""
    rows = [
        [
            r["batch_size"],
            f"{r['short_job_s']:.1f} s",
            f"{r['long_file_s']:.1f} s",
            f"{r['long_file_x_realtime']:.1f}\u00d7",
        ]
        for r in result["rows"]
    ]
    audio = result["rows"][0]["long_file_audio_s"] if result["rows"] else 0
    return (
        "\n".join(
            [
                "## A short job joining a long file on a CPU worker",
                "",
                provenance(result),
                f"One worker's `Batches` holds a long file ({audio:.0f} s of speech); a short job joins once the "
                "long file's first batch runs. The short job waits for the batch under way and then shares each "
                "batch with the long file, so its time grows with B (windows per batch); CPU workers use B = 2.",
                "",
                table(["B", "short job (joined to done)", "long file", "long file \u00d7 realtime"], rows),
            ]
        )
        + "\n"
    )


# ---------------------------------------------------------------------------------------------
# the gap between packed pieces (bench/bench_packing_gap.py)


def packing_gap_section(result: dict[str, Any]) -> str:
    """bench/results/packing-gap-cpu.json: WER and encoder work for each gap, and unpacked."""
    rows = []
    for name, s in result["summary"].items():
        diff = s.get("wer_minus_baseline")
        lo, hi = diff["interval_95"] if diff else (0, 0)
        rows.append(
            [
                name if name == "unpacked" else f"{float(name):g} s",
                f"{s['encoder_per_speech']:.2f}",
                f"{100 * s['wer']:.2f} %",
                f"{diff['points']:+.2f} ({lo:+.2f} to {hi:+.2f})" if diff else "baseline",
                f"{s['jobs_worse_than_unpacked']} / {s['jobs_better_than_unpacked']}"
                if "jobs_worse_than_unpacked" in s
                else "\u2013",
                s["foreign_words"],
                f"{s['full_stop_ends']} of {s['jobs']}",
            ]
        )
    mixes = len(result["seeds"])
    baseline = result["baseline"] if result["baseline"] == "unpacked" else f"{float(result['baseline']):g} s"
    return (
        "\n".join(
            [
                "## The silence between packed pieces (CPU)",
                "",
                provenance(result),
                "",
                f"{mixes} mixes of {result['jobs_per_mix']} short espeak jobs (2-4 sentences each), every job held at "
                f"once by the worker's `Batches` (B = {result['batch_size']} rows, tiny.en), run unpacked and packed "
                "with each gap, the variants in turn within each mix. WER over all jobs; its difference to the "
                "baseline in points, with a 95 % interval from resampling the mixes (paired). Foreign words: words "
                "a job's transcript has that only another job of its mix says (a word leaking across a boundary "
                "would count; misheard words such as 'and' count too, so the unpacked figure is the floor). "
                "Jobs worse / better: each job's own WER packed against unpacked (a row's context flips the "
                "model's doubtful words either way). "
                f"The worker packs with {result['default_gap_s']:g} s.",
                "",
                table(
                    [
                        "between pieces",
                        "encoder s ÷ speech s",
                        "WER",
                        f"WER minus {baseline} (points)",
                        "jobs worse / better than unpacked",
                        "foreign words",
                        "transcripts ending with a full stop",
                    ],
                    rows,
                ),
            ]
        )
        + "\n"
    )


# ---------------------------------------------------------------------------------------------
# host ceiling (bench/bench_host_ceiling.py)


def host_ceiling_section(result: dict[str, Any]) -> str:
    """bench/results/host-ceiling.json: the worker's host path with a zero-cost model."""
    rows = []
    for name, label in (("long_file", "one long file"), ("short_jobs", "short jobs held together")):
        r = result[name]
        rows.append(
            [
                label,
                r["jobs"],
                f"{r['audio_s_per_run']:g}",
                spread(r["xrt_per_core"], "{:.0f}", "\u00d7"),
                spread(r["xrt_wall"], "{:.0f}", "\u00d7"),
                f"{r['decode_vad_windows_share'] * 100:.0f} %" if "decode_vad_windows_share" in r else "\u2013",
            ]
        )
    mel = result["log_mel"]
    return (
        "\n".join(
            [
                "## Host ceiling: the worker's path with a zero-cost model (CPU)",
                "",
                provenance(result) + f" Commit {result.get('commit', 'not recorded')}; B = {result['batch_size']}.",
                "Everything the worker does on the host for a job runs as in the worker (open and probe, decode and "
                "VAD on each job's prefetch thread, windows, the scheduler, the CTranslate2 runner's batched log-mel "
                "prepared one batch ahead, prompts and token splitting, assembly, every output format written); the "
                "model's encoder and decoder return at once (a fixed ~40-token sequence per window). x realtime per "
                "core = audio seconds \u00f7 CPU seconds of the whole process, so a GPU worker with V vCPUs cannot "
                "go faster than about V times it; `bench.cost` caps each instance's GPU with the long-file figure. "
                "The wall clock is for reference: the machine is shared.",
                "",
                table(
                    [
                        "audio",
                        "jobs",
                        "audio s per run",
                        "\u00d7 realtime per core",
                        "\u00d7 realtime (wall)",
                        "decode + VAD + windows share of the CPU",
                    ],
                    rows,
                ),
                "",
                f"Log-mel alone ({mel['windows']} windows of 30 s, {mel['n_mels']} bands, runs interleaved in one "
                f"process): faster-whisper's extractor window by window {spread(mel['per_window_ms'], '{:.1f}')} "
                f"ms per window, one batched call {spread(mel['batched_ms_per_window'], '{:.1f}')} ms per window "
                f"(batched \u00f7 one by one: {mel['ratio_batched_to_per_window']:.2f}).",
            ]
        )
        + "\n"
    )


@dataclass(frozen=True)
class Section:
    name: str
    results_file: str  # under bench/results/
    render: Callable[[dict[str, Any]], str]


SECTIONS: list[Section] = [
    Section("engines-cpu", "engines-cpu.json", engines_section),
    Section("engines-cuda", "engines-cuda.json", engines_section),
    Section("throughput-cpu", "throughput-cpu.json", throughput_section),
    Section("throughput-cuda", "throughput-cuda.json", throughput_section),
    Section("pipeline", "pipeline-cpu.json", pipeline_section),
    Section("host-ceiling", "host-ceiling.json", host_ceiling_section),
    Section("writes", "writes.json", writes_section),
    Section("cost", "cost.json", cost_section),
    Section("simulation", "simulation.json", simulation_section),
    Section("timestamp-rules-cpu", "timestamp-rules-cpu.json", timestamp_rules_section),
    Section("short-behind-long-cpu", "short-behind-long-cpu.json", short_behind_long_section),
    Section("packing-gap-cpu", "packing-gap-cpu.json", packing_gap_section),
]


def compose(results_dir: Path = RESULTS, sections: list[Section] | None = None) -> str:
    body = []
    for section in sections or SECTIONS:
        path = results_dir / section.results_file
        if path.exists():
            body.append(f"<!-- section: {section.name} (from results/{section.results_file}) -->\n")
            body.append(section.render(json.loads(path.read_text())))
    head = (
        "# Benchmark results\n\n"
        f"Written by `python -m bench.report` on {datetime.now(UTC).date().isoformat()} from the JSON files in "
        "`bench/results/`; every figure there carries its inputs, command, machine and date.\n"
    )
    return "\n".join([head, *body])


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", type=Path, default=OUT)
    args = parser.parse_args(argv)
    args.out.write_text(compose())
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
