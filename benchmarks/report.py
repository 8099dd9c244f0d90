"""Turns the results of `python -m benchmarks` into the measured tables of docs/performance.md."""

from __future__ import annotations

from typing import Any

BEGIN = "<!-- bench:begin (written by `make bench`; edit benchmarks/report.py, not this block) -->"
END = "<!-- bench:end -->"


def _ms(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.1f}"


def _usd(value: float) -> str:
    return f"${value * 1_000_000:.2f}"


def render(results: dict[str, Any]) -> str:
    meta = results["meta"]
    out = [
        BEGIN,
        "",
        f"Measured {meta['date']} on {meta['machine']} with `{meta['command']}` "
        f"({meta['total_seconds']:.0f} s in all). Raw figures: `benchmarks/results.json`.",
        "",
    ]
    if cold := results.get("cold_start"):
        loads = cold.get("load_average_1m") or [0.0]
        out += [
            "### Cold start and peak memory (`python -m benchmarks --only cold`)",
            "",
            f"{next(iter(cold['functions'].values()))['runs']} rounds; in each, one fresh process per function "
            "followed at once by its baseline's. Cold = import + (first call - median warm call), in wall time and "
            "in the process's CPU time. Baseline = a bare handler importing boto3 and creating the same clients, "
            "measured the same way. Figures are medians; a ratio is the median of the rounds' ratios. The aim is "
            "judged on CPU time: a cold start is CPU-bound (on an idle machine CPU and wall agree), and CPU time "
            "is what other jobs on the machine stretch least. 1-minute load average of the machine during the "
            f"rounds {min(loads):.1f}-{max(loads):.1f}. Aim: ratio <= {cold['aim_ratio']}.",
            "",
            "| function | clients | import ms | first-call init ms | cold ms | bare ms | cold CPU ms | bare CPU ms "
            "| ratio (CPU) | ratio (wall) | aim met | peak RSS MB (bare) |",
            "| --- | --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | --- | ---: |",
        ]
        for name, figure in cold["functions"].items():
            out.append(
                f"| {name} | {', '.join(figure['clients'])} | {figure['import_ms']:.0f} | "
                f"{figure['first_call_extra_ms']:.0f} | {figure['cold_ms']:.0f} | {figure['baseline_cold_ms']:.0f} | "
                f"{figure['cold_cpu_ms']:.0f} | {figure['baseline_cold_cpu_ms']:.0f} | **{figure['ratio']:.2f}x** | "
                f"{figure['wall_ratio']:.2f}x | {'yes' if figure['meets_aim'] else '**no**'} | "
                f"{figure['peak_rss_mb']:.0f} ({figure['baseline_peak_rss_mb']:.0f}) |"
            )
        out += [
            "",
            "What each function imports beyond the bare handler (`python -X importtime` of its module, self time "
            "of the modules boto3 does not load, by package, largest first; importtime slows imports, so read "
            "them as shares):",
            "",
            "| function | largest imports beyond boto3 (ms) |",
            "| --- | --- |",
        ]
        for name, figure in cold["functions"].items():
            profile = ", ".join(f"{p['package']} {p['self_ms']:.0f}" for p in figure.get("import_profile", []))
            out.append(f"| {name} | {profile} |")
        out.append("")
    if warm := results.get("warm_create"):
        out += [
            "### Warm create (`python -m benchmarks --only warm`)",
            "",
            f"{warm['requests']} POST /api/conversations through the real ApiFunction handler, "
            f"{warm['users']} users round-robin, limit {warm['limit']}, policy {warm['policy']}; AWS answered "
            "in-process by moto; DNS and git remote answered in-process (benchmarks/stubs.py). *Own* = handler time "
            "minus the time inside AWS calls (botocore before-call to after-call).",
            "",
            "| path | requests | p50 ms | p99 ms | own p50 ms | own p99 ms | AWS calls |",
            "| --- | ---: | ---: | ---: | ---: | ---: | --- |",
            f"| all | {warm['requests']} | {warm['p50_ms']:.2f} | {warm['p99_ms']:.2f} | {warm['own_p50_ms']:.2f} "
            f"| {warm['own_p99_ms']:.2f} | |",
        ]
        for path, figure in warm["paths"].items():
            calls = ", ".join(f"{op} {n}" for op, n in figure["aws_calls"].items())
            out.append(
                f"| {path.replace('_', ' ')} | {figure['requests']} | {figure['p50_ms']:.2f} | {figure['p99_ms']:.2f} "
                f"| {figure['own_p50_ms']:.2f} | {figure['own_p99_ms']:.2f} | {calls} |"
            )
        free = warm["paths"].get("free_slot", {})
        out += [
            "",
            "Baselines in the same run: a bare moto `PutItem` round trip p50 "
            f"{warm['baseline_put_item_p50_ms']:.2f} ms (create p50 = **{warm['p50_ratio']:.1f}x** it; own time p50 = "
            f"**{warm['own_p50_ms'] / warm['baseline_put_item_p50_ms']:.1f}x** it); the free-slot create's own AWS "
            f"calls replayed bare p50 {warm['baseline_replay_p50_ms']:.2f} ms (free-slot create p50 = "
            f"**{free.get('replay_ratio_p50', 0):.2f}x** it).",
            "",
            f"AWS calls per create, counted with botocore hooks on the shared clients (aim <= {warm['aim_calls']}, "
            f"at the limit <= {warm.get('aim_calls_at_limit', warm['aim_calls'])}):",
            "",
            "| situation | calls | operations | aim met |",
            "| --- | ---: | --- | --- |",
        ]
        for name, scenario in warm["scenarios"].items():
            operations = ", ".join(f"{op} {n}" for op, n in scenario["by_operation"].items())
            aim = warm.get("aim_calls_at_limit", warm["aim_calls"]) if "at the limit" in name else warm["aim_calls"]
            met = "yes" if scenario["calls"] <= aim else "**no**"
            out.append(f"| {name} | {scenario['calls']} | {operations} | {met} |")
        out.append("")
    if cost := results.get("cost"):
        out += [
            "### Cost per created conversation, excluding Fargate (`python -m benchmarks --only cost`)",
            "",
            f"Counted from {cost['conversations']} full creations (API -> stream -> workflow on moto's Step Functions "
            f"engine -> scripted sandbox with {cost['heartbeats']} heartbeats -> RUNNING); prices: "
            f"{cost['prices_as_of']} (benchmarks/prices.py). The figures are the last conversation's; counts "
            + (
                "were identical for every conversation."
                if cost["identical_across_conversations"]
                else "that varied between conversations: "
                + ", ".join(cost.get("varying_across_conversations", []))
                + " (the stream's records reach ConversationStreamFunction in batches of varying size)."
            ),
            "",
            "| item | per conversation | cost per conversation | per million conversations |",
            "| --- | --- | ---: | ---: |",
        ]
        for line in cost["lines"]:
            out.append(
                f"| {line['item']} | {line['quantity']} | ${line['cost']:.7f} | ${line['cost'] * 1_000_000:,.2f} |"
            )
        out += [
            f"| **total** | | **${cost['total']:.7f}** | **${cost['per_million_conversations']:,.2f}** |",
            "",
            "Lambda detail (billed duration = measured warm time in-process + "
            f"{cost['aws_call_allowance_ms']:.0f} ms per AWS call, for the round trips moto answers in microseconds):",
            "",
            "| function | invocations | memory MB | measured ms | AWS calls/invocation | billed ms (est.) | cost |",
            "| --- | ---: | ---: | ---: | ---: | ---: | ---: |",
        ]
        for name, figure in cost["functions"].items():
            out.append(
                f"| {name} | {figure['invocations']} | {figure['memory_mb']} | {figure['measured_ms']:.1f} | "
                f"{figure['aws_calls_per_invocation']:.1f} | {figure['billed_ms_estimate']:.1f} | "
                f"${figure['cost']:.8f} |"
            )
        per = cost["per_conversation"]
        tables = "; ".join(
            f"{table.split('-', 1)[-1]}: {usage['reads']:g} RRU, {usage['writes']:g} WRU + "
            f"{usage['index_writes']:g} WRU in indexes"
            for table, usage in per["dynamodb_by_table"].items()
        )
        calls = ", ".join(f"{op} {n}" for op, n in per["calls"].items())
        out += [
            "",
            f"DynamoDB by table: {tables}. AWS calls of one creation: {calls}. "
            f"Each status poll (GET) a client makes adds about ${cost['poll_get_cost'] * 1_000_000:.2f} per million.",
            "",
        ]
    if ingest := results.get("event_ingest"):
        out += [
            "### Agent event ingest (`python -m benchmarks --only ingest`)",
            "",
            f"`POST /sandbox/v1/agent-events` through the real SandboxApiFunction handler on moto, batches of "
            f"{ingest['batch_size']} (the agent-server webhook's default), a coding session's mix (one event in ten "
            f"over 8 KB, its body in S3); {ingest['events_timed']} events timed, {ingest['events_counted']} counted. "
            "Lambda billed estimate = the handler's own time (minus AWS calls) + "
            f"{ingest['aws_call_allowance_ms']:.0f} ms per AWS call. Prices: {ingest['prices_as_of']}.",
            "",
            "| per event | ingest | baseline: one plain PutItem of the raw JSON | ratio |",
            "| --- | ---: | ---: | ---: |",
            f"| handler time, ms (p50 batch / {ingest['batch_size']}) | {ingest['per_event_ms']:.2f} | "
            f"{ingest['baseline_per_event_ms']:.2f} | {ingest['time_ratio']:.1f}x |",
            f"| DynamoDB WRU | {ingest['write_units_per_event']:.2f} | {ingest['baseline_write_units_per_event']:.2f} "
            f"| {ingest['write_units_ratio']:.1f}x |",
            f"| DynamoDB RRU | {ingest['read_units_per_event']:.2f} | 0 | |",
            f"| S3 PUT | {ingest['s3_puts_per_event']:.2f} | 0 | |",
            f"| own time (minus AWS calls), ms | {ingest['own_per_event_ms']:.2f} | | |",
            "",
            "| item | per 1,000 events | cost |",
            "| --- | --- | ---: |",
        ]
        for line in ingest["lines"]:
            out.append(f"| {line['item']} | {line['quantity']} | ${line['cost']:.6f} |")
        out += [
            f"| **total** | | **${ingest['cost_per_1000_events']:.6f}** |",
            "",
            "The ingest writes each event twice (its place `EVENT#<seq>` and its id `EVENTID#<hash>`) in one "
            "transaction (2x units) with the batch's `META` update: the price of order and exactly-once storage "
            "over the naive write.",
            "",
        ]
    if load := results.get("load"):
        out += ["### The local stack under load (`python -m benchmarks --only load`)", ""]
        if "skipped" in load:
            out += [f"Skipped: {load['skipped']}", ""]
        else:
            out += [
                f'`python -m devstack` on 127.0.0.1, POST {{"repository": "{load["repository"]}"}}; each sandbox a '
                "real local process with the real agent-server.",
                "",
                "| concurrency | creates | per-user limit | creates/s | failed | duplicate ids | RUNNING | "
                "POST->RUNNING p50 s | p95 s | other ends |",
                "| ---: | ---: | --- | ---: | ---: | ---: | ---: | ---: | ---: | --- |",
            ]
            for level in load["levels"]:
                others: dict[str, int] = {}
                for status in level["ended_other"].values():
                    others[status] = others.get(status, 0) + 1
                other = ", ".join(f"{n} {status}" for status, n in others.items()) or "none"
                if level["not_ended"]:
                    other += f", {level['not_ended']} still starting at the deadline"
                out.append(
                    f"| {level['concurrency']} | {level['creates']} | {level['per_user_limit']} | "
                    f"{level['creates_per_second']:.1f} | {level['failed_count']} | {level['duplicate_ids']} | "
                    f"{level['running']} | {_ms(level['to_running_p50_s'])} | {_ms(level['to_running_p95_s'])} | "
                    f"{other} |"
                )
            out.append("")
    if trip := results.get("message_round_trip"):
        out += [
            "### Message round trip on the local stack (`python -m benchmarks --only roundtrip`)",
            "",
            f"{trip['rounds']} rounds on one conversation of `python -m devstack` (real bootstrap, agent-server, "
            "relay and inbox poller; the scripted model answers each message with `finish` in about 1 ms). "
            "*Through the service*: `POST .../messages` until the owner's `GET .../events?wait=20` returns the "
            "agent's first event after that message. *Baseline*: the same message posted to the agent-server "
            "itself, its own event list polled every 5 ms, in the same run.",
            "",
            "| path | p50 ms | p95 ms |",
            "| --- | ---: | ---: |",
            f"| through the service | {trip['service_p50_ms']:.0f} | {trip['service_p95_ms']:.0f} |",
            f"| agent-server alone (baseline) | {trip['baseline_p50_ms']:.0f} | {trip['baseline_p95_ms']:.0f} |",
            f"| ratio | **{trip['p50_ratio']:.1f}x** | **{trip['p95_ratio']:.1f}x** |",
            "",
            "Where a round through the service goes (p50 of each part, from the agent-server's own event "
            f"timestamps): to the agent-server {trip['service_parts_p50_ms']['in']:.0f} ms (the message API, the "
            f"inbox long poll, the hand-over), the agent {trip['service_parts_p50_ms']['agent']:.0f} ms (model call "
            f"and step), back to the owner {trip['service_parts_p50_ms']['out']:.0f} ms (webhook flush, relay, "
            "sandbox API, the events long poll).",
            "",
        ]
    if start := results.get("start"):
        out += _render_start(start)
    if boot := results.get("boot"):
        out += _render_boot(boot)
    out.append(END)
    return "\n".join(out)


def _seconds(values: list[float]) -> str:
    return ", ".join(f"{value:.1f}" for value in values)


def _render_start(start: dict[str, Any]) -> list[str]:
    out = ["### Start: cold and warm (`python -m benchmarks --only start`)", ""]
    if "skipped" in start:
        return [*out, f"Skipped: {start['skipped']}", ""]
    bare, cold, warm, burst, aims = start["bare_boot"], start["cold"], start["warm"], start["burst"], start["aims"]
    loads = cold["load_average_1m"] + warm["load_average_1m"]

    def met(name: str) -> str:
        return "yes" if start["meets"][name] else "**no**"

    out += [
        f"`python -m devstack` on 127.0.0.1, one create at a time of `{start['repository']}` "
        f"(`{start['branch']}`, its setup script and hook), POST to the first GET showing RUNNING, then DELETE. "
        f"Cold: `--pool 0`; warm: `--pool {start['pool']}`, each sample once the pool is full again. "
        "Bare boot: `.venv-agent` `python -I -m openhands.agent_server` to its first healthy `/health`, "
        "measured before every cold sample and after the last. 1-minute load average of the machine during the samples "
        f"{min(loads):.1f}-{max(loads):.1f} (each sample's is in benchmarks/results.json).",
        "",
        "| start | samples | p50 s | p95 s | aim | aim met |",
        "| --- | ---: | ---: | ---: | --- | --- |",
        f"| bare agent-server boot (floor of a cold start) | {len(bare['samples'])} | {bare['p50_s']:.1f} "
        f"| {bare['p95_s']:.1f} | | |",
        f"| cold (`--pool 0`) | {len(cold['samples'])} | {cold['p50_s']:.1f} | {cold['p95_s']:.1f} "
        f"| p50 <= bare + {aims['cold_p50_over_bare_s']} s | {met('cold_p50')} |",
        f"| warm (`--pool {start['pool']}`) | {len(warm['samples'])} | {warm['p50_s']:.1f} | {warm['p95_s']:.1f} "
        f"| p50 <= {aims['warm_p50_s']} s, p95 <= {aims['warm_p95_s']} s "
        f"| p50 {met('warm_p50')}, p95 {met('warm_p95')} |",
        "",
        f"Cold p50 = bare p50 + {start['cold_over_bare_p50_s']:.1f} s (**{start['cold_over_bare_p50_ratio']:.2f}x** "
        f"the bare boot)"
        + (
            f"; each cold sample minus the bare boot just before it: p50 + {start['cold_over_paired_bare_p50_s']:.1f} s"
            if "cold_over_paired_bare_p50_s" in start
            else ""
        )
        + f"; warm p50 = **{start['warm_over_cold_p50_ratio']:.2f}x** cold p50. "
        f"Samples (s): bare {_seconds(bare['samples'])}; cold {_seconds(cold['samples'])}; "
        f"warm {_seconds(warm['samples'])}."
        + (
            f" Before the samples, one start on each fresh stack, its Lambda environments made on first use "
            f"(as after a deploy; the functions' own cold starts are the cold-start section's): cold "
            f"{cold['first_start_s']:.1f} s, warm {warm['first_start_s']:.1f} s, not among the samples."
            if "first_start_s" in cold and "first_start_s" in warm
            else ""
        ),
        "",
        f"Burst of {burst['creates']} creates at once on a pool of {burst['pool']} "
        f"(load {burst['load_average_1m']:.1f}): "
        f"{burst['running']}/{burst['creates']} RUNNING, {burst['warm']} warm ({_seconds(burst['warm_seconds'])} s), "
        f"{burst['cold']} cold ({_seconds(burst['cold_seconds'])} s); warm ones first: "
        f"{'yes' if burst['warm_before_cold'] else '**no**'}; claimed pool items {burst['claimed_items']}, "
        f"a sandbox claimed twice: {'**yes**' if burst['sandbox_claimed_twice'] else 'no'}, every claimed one was "
        f"idle before the burst: {'yes' if burst['claimed_were_idle_before'] else '**no**'}; the pool was back to "
        f"{burst['pool']} idle (new sandboxes: {'yes' if burst['refilled_with_new_sandboxes'] else '**no**'}) "
        f"{burst['refill_to_pool_s']:.1f} s after the burst's last RUNNING.",
        "",
    ]
    return out + _render_start_hops(warm, cold)


HOP_MEANINGS = {
    "client.post": "the POST's round trip (API Gateway, authorizer, the create's transaction)",
    "service.stream_to_workflow": "QUEUED -> INITIALIZING_CONTEXT: the stream, its consumer, the execution's start",
    "service.initialize_context": "InitializeContext (the context to S3), then the transition to LaunchSandbox",
    "service.claim_or_run_task": "LaunchSandbox: the pool claim (warm) or RunTask (cold)",
    "service.to_sandbox": "-> the sandbox's first phase: assignment delivered (warm) or the task started (cold)",
    "service.in_sandbox": "RUNTIME_STARTED -> `ready` received (split by the sandbox's rows below)",
    "service.ready_to_running": "`ready` -> MarkRunning's write (the task token's success, the next step)",
    "client.ready_to_seen_running": "READY -> the GET that showed RUNNING (the answer's way back, the 0.2 s poll)",
    "sandbox.assignment_to_start": "warm: the assignment -> its settings read (the sealed token opened)",
    "sandbox.process_to_start": "cold: the bootstrap's import -> its settings read (the sealed token opened)",
    "sandbox.phase_reports": "the five phase calls to the service, together",
    "sandbox.context_fetch": "GET /v1/context",
    "sandbox.users": "cold: the users, directories and the agent-server's spawn (warm: done while idle)",
    "sandbox.clone": "the clone of the branch",
    "sandbox.setup_script": "the repository's setup script as the setup user, then its processes killed",
    "sandbox.git_hooks": "the pre-commit hook, the microagents listed",
    "sandbox.head_commit": "HEAD read for the workspace report",
    "sandbox.agent_server": "cold: the rest of the agent-server's boot after the hooks; warm: checked",
    "sandbox.conversation_create": "POST /api/conversations on the agent-server (with the first message)",
}


def _render_start_hops(warm: dict[str, Any], cold: dict[str, Any]) -> list[str]:
    """The p50 of each hop, warm and cold: the conversations' `start_hops` plus the client's two."""
    warm_hops, cold_hops = warm.get("hop_p50_ms") or {}, cold.get("hop_p50_ms") or {}
    if not warm_hops and not cold_hops:
        return []
    names = [name for name in HOP_MEANINGS if name in warm_hops or name in cold_hops]
    names += [name for name in [*warm_hops, *cold_hops] if name not in names]

    def cell(hops: dict[str, float], name: str) -> str:
        return f"{hops[name] / 1000:.2f}" if name in hops else ""

    out = [
        "Where the time goes, p50 of each hop over the same samples (s; a p50 per hop, so the rows do not add "
        "up to the p50 of the whole). The service's rows add up to QUEUED -> READY of each sample; the "
        "sandbox's split `in_sandbox` (and, for the first, part of `to_sandbox`). From each conversation's "
        "`start_hops` (GET /api/conversations/{id}).",
        "",
        "| hop | what | warm p50 s | cold p50 s |",
        "| --- | --- | ---: | ---: |",
    ]
    out += [
        f"| `{name}` | {HOP_MEANINGS.get(name, '')} | {cell(warm_hops, name)} | {cell(cold_hops, name)} |"
        for name in names
    ]
    return [*out, ""]


def _render_boot(boot: dict[str, Any]) -> list[str]:
    """benchmarks/boot.py: the bare boot on the host, without bytecode, and in the image."""
    rows = [
        ("host (`.venv-agent`, its pycs)", "host"),
        ("host, no bytecode (`-B -X pycache_prefix=<empty>`)", "host_no_bytecode"),
    ]
    rows.append(("image (`buildah run --isolation chroot`, agent user)", "image"))
    out = [
        "### Bare agent-server boot: host, no bytecode, image (`python -m benchmarks --only boot`)",
        "",
        "Spawn to the first `/health` answering 200, the three interleaved in one run; load average (1 min) "
        "when each started.",
        "",
        "| boot | samples s | p50 s | load average |",
        "| --- | --- | --- | --- |",
    ]
    for label, name in rows:
        figure = boot.get(name, {})
        if "skipped" in figure:
            out.append(f"| {label} | skipped: {figure['skipped']} | | |")
        elif figure:
            loads = ", ".join(f"{value:.1f}" for value in figure["load_average_1m"])
            out.append(f"| {label} | {_seconds(figure['samples'])} | {figure['p50_s']:.1f} | {loads} |")
    out += ["", f"No bytecode / host: **{boot['no_bytecode_over_host_ratio']:.2f}x**."]
    if "image_over_host_ratio" in boot:
        out[-1] += f" Image / host: **{boot['image_over_host_ratio']:.2f}x** (`{boot['image_reference']}`)."
    return [*out, ""]


def splice(document: str, block: str) -> str:
    if BEGIN in document and END in document:
        head, rest = document.split(BEGIN, 1)
        _, tail = rest.split(END, 1)
        return head + block + tail
    return document.rstrip() + "\n\n" + block + "\n"


__all__ = ["BEGIN", "END", "_usd", "render", "splice"]
