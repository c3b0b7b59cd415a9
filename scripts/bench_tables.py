#!/usr/bin/env python3
"""Rewrites the generated tables of docs/benchmarks.md from criterion's results.

Each table sits between `<!-- NAME:begin -->` and `<!-- NAME:end -->`; text around them is kept.
Every ratio is computed from measurements of the same run.
"""
import datetime
import json
import pathlib
import platform
import re
import subprocess

ROOT = pathlib.Path(__file__).resolve().parent.parent
CRITERION = ROOT / "target" / "criterion"
DOC = ROOT / "docs" / "benchmarks.md"
SIZES = ["256B", "64KiB", "1MiB"]


def mean_ns(group, bench, size):
    path = CRITERION / group / bench / size / "new" / "estimates.json"
    return json.loads(path.read_text())["mean"]["point_estimate"]


def fmt_time(ns):
    if ns >= 1e6:
        return f"{ns / 1e6:.2f} ms"
    return f"{ns / 1e3:.1f} µs"


def machine():
    cpu = "unknown CPU"
    for line in pathlib.Path("/proc/cpuinfo").read_text().splitlines():
        if line.startswith("model name"):
            cpu = line.split(":", 1)[1].strip()
            break
    cores = len(re.findall(r"^processor", pathlib.Path("/proc/cpuinfo").read_text(), re.M))
    rustc = subprocess.run(["rustc", "--version"], capture_output=True, text=True).stdout.strip()
    today = datetime.date.today().isoformat()
    return f"{today}, {cpu}, {cores} cores, {platform.system()} {platform.release()}, {rustc}"


def envelope_table():
    rows = [
        f"Measured {machine()}.",
        "",
        "| operation | payload | bare HPKE Base | HPKE Auth | HPKE Base + Ed25519 | fedq envelope "
        "| envelope ÷ HPKE Base + Ed25519 | envelope ÷ HPKE Auth | envelope ÷ bare HPKE Base |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for group in ["seal", "open"]:
        for size in SIZES:
            base = mean_ns(group, "hpke_base", size)
            auth = mean_ns(group, "hpke_auth", size)
            signed = mean_ns(group, "hpke_base_ed25519", size)
            env = mean_ns(group, "envelope", size)
            rows.append(
                f"| {group} | {size} | {fmt_time(base)} | {fmt_time(auth)} | {fmt_time(signed)} "
                f"| {fmt_time(env)} | {env / signed:.2f} | {env / auth:.2f} | {env / base:.2f} |"
            )
    return "\n".join(rows)


def router_table():
    data = json.loads((ROOT / "target" / "bench-router.json").read_text())
    rows = [
        f"Measured {machine()}; {data['n']} envelopes of 1 KiB per row.",
        "",
        "| in flight | server replicas | no-op, envelopes/s | fedq router, envelopes/s | ratio to no-op | router envelopes per CPU-second |",
        "|---|---|---|---|---|---|",
    ]
    for r in data["throughput"]:
        rows.append(
            f"| {r['in_flight']} | {r['replicas']} | {r['noop_per_sec']:.0f} | {r['router_per_sec']:.0f} "
            f"| {r['router_per_sec'] / r['noop_per_sec']:.2f} | {r['router_per_cpu_sec']:.0f} |"
        )
    lat = data["latency"]
    rows += [
        "",
        f"Latency from publish to arrival in the recipient's queue, {lat['n']} envelopes offered at "
        f"{lat['rate']}/s:",
        "",
        "| forwarder | p50 | p99 |",
        "|---|---|---|",
        f"| no-op | {lat['noop_p50_ms']:.1f} ms | {lat['noop_p99_ms']:.1f} ms |",
        f"| fedq router | {lat['router_p50_ms']:.1f} ms | {lat['router_p99_ms']:.1f} ms |",
    ]
    log = data.get("transparency")
    if log:
        rows += [
            "",
            "The transparency log's cost: the router at 64 in flight with and without logging each "
            "envelope (`transparency.log_envelopes`), in turns:",
            "",
            "| round | with the log, envelopes/s | without, envelopes/s | ratio |",
            "|---|---|---|---|",
        ]
        rounds = sorted({r["round"] for r in log})
        ratios = []
        for n in rounds:
            on = next(r["router_per_sec"] for r in log if r["round"] == n and r["logged"])
            off = next(r["router_per_sec"] for r in log if r["round"] == n and not r["logged"])
            ratios.append(on / off)
            rows.append(f"| {n + 1} | {on:.0f} | {off:.0f} | {on / off:.2f} |")
        total_on = sum(r["router_per_sec"] for r in log if r["logged"])
        total_off = sum(r["router_per_sec"] for r in log if not r["logged"])
        rows.append(f"| all | {total_on / len(rounds):.0f} | {total_off / len(rounds):.0f} | {total_on / total_off:.2f} |")
    return "\n".join(rows)


def node_table():
    d = json.loads((ROOT / "target" / "bench-node.json").read_text())
    return "\n".join([
        f"Measured {machine()}; {d['jobs']} jobs of the probe image, one at a time, medians (p90).",
        "",
        "| span | time |",
        "|---|---|",
        f"| job_start reaches the node → container running | {d['to_running_ms']:.1f} ms ({d['to_running_p90_ms']:.1f}) |",
        f"| of which Docker creates and starts the hardened container | {d['docker_start_ms']:.1f} ms |",
        f"| container exit → result confirmed by the broker | {d['exit_to_confirm_ms']:.1f} ms ({d['exit_to_confirm_p90_ms']:.1f}) |",
        f"| **node overhead** (both spans minus Docker's create and start) | **{d['overhead_ms']:.1f} ms** ({d['overhead_p90_ms']:.1f}) |",
        f"| bare `docker run --rm` of the same image (create, start, exit, remove) | {d['bare_docker_run_ms']:.1f} ms ({d['bare_docker_run_p90_ms']:.1f}) |",
        "",
        f"Node overhead ÷ bare `docker run --rm`: {d['overhead_ms'] / d['bare_docker_run_ms']:.3f}. "
        f"Goal: overhead under 50 ms at the median — {'met' if d['overhead_ms'] < 50 else 'NOT met'}.",
    ])


def secure_sum_table():
    rows = json.loads((ROOT / "target" / "bench-secure-sum.json").read_text())
    node = json.loads((ROOT / "target" / "bench-node.json").read_text())
    single = node["docker_start_ms"]
    out = [
        f"Measured {machine()}; median of 3 runs after a warm-up, every node on this one host.",
        "",
        "| registries | wall time (task created → all results opened) | median container start during the run |",
        "|---|---|---|",
    ]
    for r in rows:
        out.append(f"| {r['registries']} | {r['wall_ms']:.0f} ms | {r['container_start_ms']:.0f} ms |")
    first, last = rows[0], rows[-1]
    growth = (last["wall_ms"] - first["wall_ms"]) / (last["registries"] - first["registries"])
    three = next(r for r in rows if r["registries"] == 3)
    out += [
        "",
        f"Growth per added registry ({first['registries']} → {last['registries']}): {growth:.0f} ms, against one "
        f"container start alone plus 20 ms = {single + 20:.0f} ms (the start measured by the node benchmark, same "
        f"run of `scripts/bench`): ratio {growth / (single + 20):.2f}. Goals: 3 registries under 2 s — "
        f"{'met' if three['wall_ms'] < 2000 else 'NOT met'} ({three['wall_ms'] / 2000:.2f} of the budget); growth per "
        f"registry at most a container start plus 20 ms — {'met' if growth <= single + 20 else 'NOT met'}.",
    ]
    return "\n".join(out)


def glm_table():
    d = json.loads((ROOT / "target" / "bench-glm.json").read_text())
    ratio = d["step_s"] / d["glm_s"]
    out = [
        f"Measured {machine()}; {d['registries']} registries × {d['rows']:,} rows × {d['features']} features, every "
        "node on this one host; `glm` the median of 3 runs after a warm-up, the tasks per iteration once after it.",
        "",
        "| how | wall time (task created → result opened) | container starts | iterations | largest relative "
        "difference from statsmodels' coefficients |",
        "|---|---|---|---|---|",
        f"| `glm`: one task, containers up for the whole fit | {d['glm_s']:.2f} s | {d['glm_containers']} "
        f"| {d['glm_iterations']} | {d['glm_error']:.1e} |",
        f"| `glm_step`: one task per IRLS iteration | {d['step_s']:.2f} s | {d['step_containers']} "
        f"| {d['step_tasks']} | {d['step_error']:.1e} |",
        f"| statsmodels on the pooled rows, in one process (fit only; reading the CSVs {d['statsmodels_read_s']:.2f} s "
        f"more) | {d['statsmodels_fit_s']:.2f} s | 0 | {d['statsmodels_iterations']} | — |",
        "",
        f"A task per iteration ÷ one task: {ratio:.1f}×; one task ÷ statsmodels' fit: "
        f"{d['glm_s'] / d['statsmodels_fit_s']:.1f}×. Goals: under 3 s — "
        f"{'met' if d['glm_s'] < 3 else 'NOT met'} ({d['glm_s'] / 3:.2f} of the budget); at least 5× faster than a "
        f"container per iteration — {'met' if ratio >= 5 else 'NOT met'} ({ratio / 5:.2f} of it).",
    ]
    return "\n".join(out)


def dashboard_table():
    d = json.loads((ROOT / "target" / "bench-dashboard.json").read_text())
    pages = d["pages"]
    base = pages[0]["p50_ms"]
    overview = next(p for p in pages if p["page"] == "overview, root")
    out = [
        f"Measured {machine()}; {d['tasks']:,} tasks, {d['jobs']:,} jobs, {d['routing_log']:,} routing-log rows, "
        f"500 dead letters; {d['rounds']} sequential requests per page by a logged-in administrator after 10 "
        "warm-up requests; time to the last byte of the answer.",
        "",
        "| page | p50 | p95 | max | p50 ÷ baseline p50 |",
        "|---|---|---|---|---|",
    ]
    for p in pages:
        out.append(
            f"| {p['page']} (`{re.sub(r'[0-9a-f-]{36}', '{id}', p['path'])}`) | {p['p50_ms']:.1f} ms | {p['p95_ms']:.1f} ms "
            f"| {p['max_ms']:.1f} ms | {p['p50_ms'] / base:.0f} |"
        )
    slowest = max(pages[1:], key=lambda p: p["p95_ms"])
    out += [
        "",
        f"Goal: the overview and the lists within 100 ms with {d['tasks']:,} tasks and "
        f"{d['routing_log']:,} routing-log rows — "
        f"{'met' if slowest['p95_ms'] < 100 else 'NOT met'} (overview p95 {overview['p95_ms']:.1f} ms; "
        f"slowest page: {slowest['page']}, p95 {slowest['p95_ms']:.1f} ms, "
        f"{slowest['p95_ms'] / 100:.2f} of the budget).",
    ]
    return "\n".join(out)


def load_row(d):
    return (
        f"| {d['orgs']} | {d['tasks']:,} | {d['in_flight']} | {d['per_sec']:.1f} | {d['p50_ms']:.0f} ms "
        f"| {d['p95_ms']:.0f} ms | {d['p99_ms']:.0f} ms | {d['server_rss_mib']:.0f} MiB "
        f"| {d['node_rss_max_mib']:.0f} MiB | {d['errors']} |"
    )


def load_table():
    d = json.loads((ROOT / "target" / "bench-load.json").read_text())
    node = json.loads((ROOT / "target" / "bench-node.json").read_text())
    bare = node["bare_docker_run_ms"]
    return "\n".join([
        f"Measured {machine()}; `fedq server` and 20 `fedq node` processes, one job per task.",
        "",
        "| organizations | tasks | in flight | tasks/s | p50 | p95 | p99 | server peak RSS | node peak RSS (max of 20) | errors |",
        "|---|---|---|---|---|---|---|---|---|---|",
        load_row(d),
        "",
        f"Per task, wall time ÷ tasks: {1000 / d['per_sec']:.0f} ms, against a bare `docker run --rm` of the same "
        f"image alone {bare:.0f} ms (node benchmark, same run): ratio {1000 / d['per_sec'] / bare:.2f}. "
        f"Goals at this load: server under 150 MiB — {'met' if d['server_rss_mib'] < 150 else 'NOT met'} "
        f"({d['server_rss_mib'] / 150:.2f} of it); node under 50 MiB — "
        f"{'met' if d['node_rss_max_mib'] < 50 else 'NOT met'} ({d['node_rss_max_mib'] / 50:.2f} of it); no error — "
        f"{'met' if d['errors'] == 0 else 'NOT met'}.",
    ])


def replace(text, name, table):
    pattern = re.compile(rf"(<!-- {name}:begin -->\n)(?:.*?\n)?(<!-- {name}:end -->)", re.S)
    if not pattern.search(text):
        raise SystemExit(f"docs/benchmarks.md has no {name} markers")
    return pattern.sub(lambda m: m.group(1) + table + "\n" + m.group(2), text)


TABLES = {
    "envelope": envelope_table,
    "router": router_table,
    "node": node_table,
    "secure-sum": secure_sum_table,
    "glm": glm_table,
    "dashboard": dashboard_table,
    "load": load_table,
}


def main(names):
    """Rewrites the tables ``names`` (every one without), from the results their benchmarks left."""
    unknown = [name for name in names if name not in TABLES]
    if unknown:
        raise SystemExit(f"no table {', '.join(unknown)}; the tables are {', '.join(TABLES)}")
    text = DOC.read_text()
    for name in names or TABLES:
        text = replace(text, name, TABLES[name]())
    DOC.write_text(text)


if __name__ == "__main__":
    import sys

    main(sys.argv[1:])
