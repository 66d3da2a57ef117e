"""Benchmark: waiting on many conversations at once, and the parse-time cost of the operator modules.

    .venv/bin/pip install -e . -r requirements/bench.txt
    .venv/bin/python benchmarks/polling.py                 # N = 10, 100, 1000 + makespan
    .venv/bin/python benchmarks/polling.py --no-makespan   # the same without real Airflow (~45 minutes)
    .venv/bin/python benchmarks/polling.py --quick         # N = 10, 100

Everything runs here, against the bundled emulator on loopback (in its own process). For each N,
N conversations are seeded that finish at staggered times, and one child process waits on all of
them in one asyncio loop, as a triggerer does, with a poll interval of 5 s, using:

* ``coalesced``: this provider's trigger (one shared poller per connection, batched requests,
  within the connection's request budget: the default 60 requests per minute);
* ``per-trigger``: the same trigger with coalescing turned off (one client and one request per
  trigger per interval: the dbt Cloud provider's pattern);
* ``HttpSensorTrigger``: apache-airflow-providers-http's deferrable sensor trigger. It cannot read
  a JSON status (it fires on the first non-404 answer), so it polls the emulator's
  ``/_emulator/done/{id}``, which answers 404 until the conversation finished.

N = 1000 runs the coalesced poller only: every request of the process takes a slot of its budget,
and the per-trigger waiter's thousand requests a round would take many minutes each.

Then (not with ``--quick``): three waiting processes of 100 waits each on one account that allows
100 requests a minute (the 429s after the first minute, the requests per conversation besides the
batched polls), and 20 waits on conversations paused mid-run (poll interval 2 s) for 3 minutes.

Measured: requests per minute seen by the emulator (mean over the run, and the most in any 60 s
window), CPU seconds and peak RSS of the waiting process (above its idle RSS once its imports are
done), and detection latency (finish -> event). The table is printed and written to
docs/benchmarks.md.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import resource
import statistics
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

from airflow_provider_openhands.testing.emulator import max_in_window

REPO = Path(__file__).resolve().parent.parent
INTERVAL = 5.0
API_KEY = "bench-key"
VARIANTS = ("coalesced", "per-trigger", "HttpSensorTrigger")
#: Sizes at which only the coalesced poller runs.
#: (each wait's end costs one events read within the budget of 60 a minute: 1000 ends take 17 minutes,
#: and the per-trigger waiter, within the same budget, would take far longer)
COALESCED_ONLY = (1000,)
WINDOW = 60.0
#: The batched read of conversations: every other request is one wait's own.
BATCH = "/api/v1/app-conversations"
#: Fresh interpreters per import figure (the median is kept).
IMPORT_RUNS = 9
#: What a DAG file imports to use each provider (issue 18: ours is compared with dbt Cloud's).
PARSE_MODULES = {
    "airflow-provider-openhands": [
        "airflow_provider_openhands.operators.openhands",
        "airflow_provider_openhands.sensors.openhands",
        "airflow_provider_openhands.decorators.openhands",
    ],
    "dbt Cloud provider": ["airflow.providers.dbt.cloud.operators.dbt", "airflow.providers.dbt.cloud.sensors.dbt"],
    "HTTP provider": ["airflow.providers.http.operators.http", "airflow.providers.http.sensors.http"],
}


# -- the waiting child process -------------------------------------------------------------------


def rss_mb() -> float:
    with open("/proc/self/status") as status:
        for line in status:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    return float("nan")


def waiter(variant: str, ids_file: str) -> None:
    """Wait on every id in one asyncio loop; print a JSON line with the figures."""
    conversations = json.loads(Path(ids_file).read_text())
    from airflow_provider_openhands.triggers.openhands import OpenHandsConversationTrigger

    if variant == "HttpSensorTrigger":
        from airflow.providers.http.triggers.http import HttpSensorTrigger

        def make(conversation: dict):
            return HttpSensorTrigger(
                endpoint=f"/_emulator/done/{conversation['id']}", http_conn_id="oh_bench_http", poke_interval=INTERVAL
            )
    else:

        def make(conversation: dict):
            return OpenHandsConversationTrigger(
                openhands_conn_id="openhands_default",
                conversation_id=conversation["id"],
                poll_interval=INTERVAL,
                end_time=time.time() + 2400,
                coalesce=variant == "coalesced",
            )

    triggers = [make(c) for c in conversations]
    idle_rss = rss_mb()
    cpu_before = resource.getrusage(resource.RUSAGE_SELF)
    latencies: list[float] = []
    outcomes: list[str] = []

    async def wait_one(conversation: dict, trigger) -> None:
        async for event in trigger.run():
            latencies.append(time.time() - conversation["finishes_at"])
            payload = event.payload
            outcomes.append(payload["outcome"] if isinstance(payload, dict) else str(payload))
            return

    async def wait_all() -> None:
        await asyncio.wait_for(
            asyncio.gather(*(wait_one(c, t) for c, t in zip(conversations, triggers, strict=True))), 3000
        )

    started = time.time()
    asyncio.run(wait_all())
    wall = time.time() - started
    cpu_after = resource.getrusage(resource.RUSAGE_SELF)
    cpu = (cpu_after.ru_utime - cpu_before.ru_utime) + (cpu_after.ru_stime - cpu_before.ru_stime)
    peak_rss = cpu_after.ru_maxrss / 1024
    print(
        json.dumps(
            {
                "wall": wall,
                "cpu": cpu,
                "idle_rss": idle_rss,
                "peak_rss": peak_rss,
                "latency_max": max(latencies),
                "latency_median": statistics.median(latencies),
                "outcomes": sorted(set(outcomes)),
                "events": len(outcomes),
            }
        )
    )


# -- the driver ----------------------------------------------------------------------------------


def control(base: str, path: str, body: dict | None = None):
    data = json.dumps(body).encode() if body is not None else None
    request = urllib.request.Request(base + path, data=data, method="POST" if data else "GET")
    request.add_header("Content-Type", "application/json")
    with urllib.request.urlopen(request, timeout=60) as answer:
        return json.loads(answer.read())


def start_emulator(port: int) -> subprocess.Popen:
    process = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "airflow_provider_openhands.testing",
            "--port",
            str(port),
            "--api-key",
            API_KEY,
            "--concurrency-limit",
            "100000",
            "--start-seconds",
            "0",
        ],
        stdout=subprocess.PIPE,
        text=True,
    )
    process.stdout.readline()  # "listening on ..."
    return process


def run_case(base: str, variant: str, n: int, spread: float, workdir: Path) -> dict:
    control(base, "/_emulator/reset", {})
    # finishes staggered over [INTERVAL, INTERVAL + spread] seconds after the waiter starts
    lead = 3.0
    durations = [lead + INTERVAL + spread * k / max(1, n - 1) for k in range(n)]
    conversations = control(base, "/_emulator/seed", {"durations": durations})
    ids_file = workdir / f"ids-{variant}-{n}.json"
    ids_file.write_text(json.dumps(conversations))
    requests_before = control(base, "/_emulator/stats")["requests"]
    env = {
        **os.environ,
        "AIRFLOW_CONN_OPENHANDS_DEFAULT": json.dumps(
            {"conn_type": "openhands", "host": base, "password": API_KEY, "extra": {"api_version": "v1"}}
        ),
        "AIRFLOW_CONN_OH_BENCH_HTTP": json.dumps({"conn_type": "http", "host": base}),
    }
    child = subprocess.run(
        [sys.executable, __file__, "--waiter", variant, "--ids", str(ids_file)],
        capture_output=True,
        text=True,
        env=env,
        timeout=3600,
    )
    lines = [line for line in child.stdout.splitlines() if line.startswith("{")]
    if child.returncode != 0 or not lines:
        raise SystemExit(f"waiter {variant} N={n} failed:\n{child.stderr[-3000:]}")
    figures = json.loads(lines[-1])
    requests = control(base, "/_emulator/stats")["requests"] - requests_before
    log = control(base, "/_emulator/requests")[requests_before:]
    times = sorted(entry["at"] for entry in log)
    figures.update(
        variant=variant,
        n=n,
        requests=requests,
        rpm=requests / (figures["wall"] / 60),
        rpm_max=max_in_window(times, WINDOW),
        # what the waits sent besides the batched polls, per conversation (the end's events read)
        per_conversation=sum(1 for entry in log if entry["path"] != BATCH) / n if variant == "coalesced" else None,
    )
    return figures


def variants_for(n: int) -> tuple[str, ...]:
    """What runs at size ``n``: the per-trigger waiter only at N = 10 (a hundred private pollers, each a
    request a round within the process's one budget, take many minutes to see a hundred ends)."""
    if n in COALESCED_ONLY:
        return ("coalesced",)
    return VARIANTS if n <= 10 else ("coalesced", "HttpSensorTrigger")


def api(base: str, method: str, path: str) -> object:
    """A request to the emulated service itself, with the account's key."""
    request = urllib.request.Request(base + path, data=b"" if method == "POST" else None, method=method)
    request.add_header("Authorization", f"Bearer {API_KEY}")
    with urllib.request.urlopen(request, timeout=60) as answer:
        return json.loads(answer.read() or b"null")


def many_waits(base: str, ids_file: Path, *args: str) -> subprocess.Popen:
    """A triggerer's worth of waits in a process of its own (``tests/harness/many_waits.py``)."""
    sys.path.insert(0, str(REPO))
    from tests.harness.many_waits import spawn

    return spawn(ids_file, json.dumps(_connection(base)), *args)


def _connection(base: str) -> dict:
    return {"conn_type": "openhands", "host": base, "password": API_KEY, "extra": {"api_version": "v1"}}


def shared_account(base: str, workdir: Path, processes: int = 3, n: int = 100, limit: int = 100) -> dict:
    """``processes`` triggerer processes of ``n`` waits each (30-120 s conversations, poll interval 10 s,
    the default budget of 60 a minute each) on one account that allows ``limit`` a minute."""
    control(base, "/_emulator/reset", {})
    control(base, "/_emulator/config", {"rate_limit_per_minute": limit})
    children = []
    for process in range(processes):
        seeded = control(base, "/_emulator/seed", {"durations": [30 + 90 * k / (n - 1) for k in range(n)]})
        ids_file = workdir / f"shared-{process}.json"
        ids_file.write_text(json.dumps(seeded))
        children.append(many_waits(base, ids_file, "--poll-interval", "10", "--timeout", "1200"))
    reports = []
    for child in children:
        out, err = child.communicate(timeout=1800)
        if child.returncode != 0:
            raise SystemExit(f"shared-account waiter failed:\n{err[-3000:]}")
        reports.append(json.loads(out.strip().splitlines()[-1]))
    control(base, "/_emulator/config", {"rate_limit_per_minute": None})
    log = control(base, "/_emulator/requests")
    first = min(entry["at"] for entry in log)
    later = [entry for entry in log if entry["at"] >= first + WINDOW]
    refused = [entry for entry in later if entry.get("status") == 429]
    outcomes = [outcome for report in reports for outcome in report["outcomes"]]
    return {
        "processes": processes,
        "n": n,
        "limit": limit,
        "ended": sum(outcome == "success" for outcome in outcomes),
        "wall": max(report["wall"] for report in reports),
        "requests": len(log),
        "refused_all": sum(entry.get("status") == 429 for entry in log),
        "refused_later": len(refused),
        "later": len(later),
        "per_conversation": sum(1 for entry in log if entry["path"] != BATCH and entry.get("status") != 429)
        / (processes * n),
        "accepted_max": max_in_window(sorted(e["at"] for e in log if e.get("status") != 429), WINDOW),
    }


def paused_waits(base: str, workdir: Path, n: int = 20, seconds: float = 180.0) -> dict:
    """``n`` waits (poll interval 2 s, budget 60 a minute) on conversations paused mid-run, for ``seconds``."""
    control(base, "/_emulator/reset", {})
    seeded = control(base, "/_emulator/seed", {"durations": [3600] * n})
    ids = "&".join(f"ids={item['id']}" for item in seeded)
    for conversation in api(base, "GET", f"/api/v1/app-conversations?{ids}"):
        api(base, "POST", f"/api/v1/sandboxes/{conversation['sandbox_id']}/pause")
    ids_file = workdir / "paused.json"
    ids_file.write_text(json.dumps(seeded))
    before = control(base, "/_emulator/stats")["requests"]
    child = many_waits(base, ids_file, "--poll-interval", "2", "--timeout", str(seconds))
    _out, err = child.communicate(timeout=seconds + 600)
    if child.returncode != 0:
        raise SystemExit(f"paused waiter failed:\n{err[-3000:]}")
    log = control(base, "/_emulator/requests")[before:]
    return {
        "n": n,
        "seconds": seconds,
        "requests": len(log),
        "events_reads": sum(1 for entry in log if entry["path"].endswith("/events/search")),
        "max_in_60s": max_in_window(sorted(entry["at"] for entry in log), WINDOW),
    }


def import_cost(modules: list[str], runs: int = IMPORT_RUNS) -> float:
    """Median ms to import ``modules`` in a fresh interpreter that has already imported airflow.sdk.

    From compiled bytecode, as a deployment parses DAG files (an installed package comes with its
    ``.pyc``): with ``PYTHONDONTWRITEBYTECODE`` set, this package's sources would be compiled again in
    every run while the other providers' come compiled. So the runs keep their bytecode in
    ``.bench/pycache``, filled by one first run that is not counted.
    """
    env = {key: value for key, value in os.environ.items() if key != "PYTHONDONTWRITEBYTECODE"}
    env["PYTHONPYCACHEPREFIX"] = str(REPO / ".bench" / "pycache")
    code = (
        "import time\n"
        "try:\n    import airflow.sdk\nexcept ImportError:\n    import airflow.models.baseoperator\n"
        "t = time.perf_counter()\n"
        + "".join(f"import {m}\n" for m in modules)
        + "print((time.perf_counter() - t) * 1000)\n"
    )
    samples = []
    for _ in range(runs + 1):
        out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, env=env)
        samples.append(float(out.stdout.strip().splitlines()[-1]))
    return statistics.median(samples[1:])


def makespan(conversations: int = 30, seconds: float = 30.0, limit: int = 10) -> dict:
    """Real Airflow (``airflow standalone``): the nightly example DAG mapped over ``conversations``
    repositories of ``seconds`` each, with an account limit and pool of ``limit``."""
    sys.path.insert(0, str(REPO))
    from airflow_provider_openhands.testing import Emulator
    from scripts.local_airflow import LocalAirflow

    repositories = [f"acme/bench-{n:02d}" for n in range(conversations)]
    with Emulator(concurrency_limit=limit, conversation_seconds=seconds, start_seconds=1) as emulator:
        airflow = LocalAirflow(
            connection={"conn_type": "openhands", "host": emulator.url, "password": emulator.api_key},
            pool_slots=limit,
            extra_env={"OPENHANDS_EXAMPLE_POLL_SECONDS": "2"},
            log=lambda line: print(f"[makespan] {line}", flush=True),
        )
        try:
            airflow.start()
            airflow.wait_for_dag("openhands_nightly_maintenance")
            run_id = airflow.trigger("openhands_nightly_maintenance", {"repositories": repositories})
            state = airflow.wait_for_run("openhands_nightly_maintenance", run_id, timeout=1200)
            times = airflow.query(
                "SELECT min(start_date), max(end_date) FROM task_instance WHERE run_id = ? AND task_id = 'maintain'",
                run_id,
            )[0]
        finally:
            airflow.stop()
            airflow.cleanup()
        stats = emulator.stats()
    from datetime import datetime

    first, last = (datetime.fromisoformat(str(t).replace("Z", "+00:00")) for t in times)
    ideal = seconds * -(-conversations // limit)
    return {
        "state": state,
        "makespan": (last - first).total_seconds(),
        "ideal": ideal,
        "max_alive": stats["max_alive"],
        "conversations": conversations,
        "seconds": seconds,
        "limit": limit,
    }


def commit() -> str:
    try:
        out = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=REPO, capture_output=True, text=True)
        return out.stdout.strip() or "unknown"
    except OSError:
        return "unknown"


def machine() -> str:
    import airflow

    cpu = "unknown CPU"
    with open("/proc/cpuinfo") as info:
        for line in info:
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    return (
        f"{os.cpu_count()} cores ({cpu}), Python {platform.python_version()}, "
        f"Airflow {airflow.__version__}, {platform.system()} {platform.release()}"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="N = 10 and 100 only")
    parser.add_argument("--spread", type=float, default=30.0, help="seconds over which conversations finish")
    parser.add_argument("--port", type=int, default=18123)
    parser.add_argument("--no-makespan", action="store_true", help="skip the real-Airflow makespan run")
    parser.add_argument(
        "--sizes",
        type=int,
        nargs="+",
        help="the N to wait on (default: 10, 100 and 1000; N = 1,000 confirms its ends at the budget's pace: long)",
    )
    parser.add_argument("--waiter", choices=VARIANTS, help=argparse.SUPPRESS)
    parser.add_argument("--ids", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.waiter:
        waiter(args.waiter, args.ids)
        return

    sizes = (10, 100) if args.quick else tuple(args.sizes or (10, 100, *COALESCED_ONLY))
    workdir = REPO / ".bench"
    workdir.mkdir(exist_ok=True)
    base = f"http://127.0.0.1:{args.port}"
    emulator = start_emulator(args.port)
    rows = []
    try:
        for n in sizes:
            for variant in variants_for(n):
                figures = run_case(base, variant, n, args.spread, workdir)
                rows.append(figures)
                print(
                    f"N={n:<5} {variant:<18} {figures['rpm']:8.1f} req/min (max {figures['rpm_max']} in 60 s)  "
                    f"cpu {figures['cpu']:6.2f}s "
                    f"({100 * figures['cpu'] / figures['wall']:4.1f}% of a core)  "
                    f"rss +{figures['peak_rss'] - figures['idle_rss']:6.1f} MB  "
                    f"latency max {figures['latency_max']:5.2f}s  events {figures['events']} {figures['outcomes']}",
                    flush=True,
                )
        account = None if args.quick else shared_account(base, workdir)
        if account:
            print(f"shared account: {account}", flush=True)
        paused = None if args.quick else paused_waits(base, workdir)
        if paused:
            print(f"paused: {paused}", flush=True)
    finally:
        emulator.terminate()
        emulator.wait()

    imports = {name: import_cost(modules) for name, modules in PARSE_MODULES.items()}
    span = None if args.no_makespan or args.quick else makespan()
    write_report(
        rows,
        imports,
        args.spread,
        span,
        kept=None if span or args.quick else kept_makespan(),
        account=account,
        paused=paused,
    )


def kept_makespan() -> list[str] | None:
    """The makespan section of the current report, to keep when it is not measured again."""
    try:
        text = (REPO / "docs" / "benchmarks.md").read_text()
    except OSError:
        return None
    heading = "## Makespan in a real Airflow"
    if heading not in text:
        return None
    section = text[text.index(heading) :].rstrip("\n").splitlines()
    note = "Kept from an earlier run (`--no-makespan` skipped it this time)."
    return [*section[:2], *([note, ""] if note not in section else []), *section[2:], ""]


def ratio(ms: float, imports: dict[str, float]) -> str:
    dbt = imports.get("dbt Cloud provider")
    return f"{ms / dbt:.3f}" if dbt else "n/a"


def write_report(
    rows: list[dict],
    imports: dict[str, float],
    spread: float,
    span: dict | None = None,
    kept: list[str] | None = None,
    account: dict | None = None,
    paused: dict | None = None,
) -> None:
    lines = [
        "# Benchmarks",
        "",
        f"Machine: {machine()}. Run: `.venv/bin/python benchmarks/polling.py` on {time.strftime('%Y-%m-%d')}, "
        f"at commit {commit()}.",
        "",
        "## Waiting on N conversations at once",
        "",
        f"One asyncio loop (as in the triggerer), poll interval {INTERVAL:.0f} s, conversations finishing "
        f"evenly over {spread:.0f} s; the emulator runs in its own process on loopback. CPU and RSS are "
        "the waiting process's; RSS is the peak above its idle RSS after imports. Requests/min is the mean "
        "over the run; max in 60 s the most requests the emulator received in any 60 s (the whole run "
        "when it was shorter).",
        "",
        "Every request of the waiting process, the batched polls and each wait's own reads alike, takes a "
        "slot of one request budget per process and connection (extra `max_requests_per_minute`, default "
        "60): once the requests due need more than the budget allows, rounds stretch instead, and "
        "detection latency grows with N. Other req/conv is what the coalesced waits sent besides the "
        "batched polls, per ended conversation: the events read that confirms the end and gives the final "
        "message. `coalesce=False` triggers each poll on their own, within the same budget.",
        "",
        "| N | waiter | requests/min | max in 60 s | other req/conv | CPU s | % of a core | RSS + MB "
        "| latency median s | latency max s |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        other = "" if r.get("per_conversation") is None else f"{r['per_conversation']:.2f}"
        lines.append(
            f"| {r['n']} | {r['variant']} | {r['rpm']:.1f} | {r['rpm_max']} | {other} | {r['cpu']:.2f} "
            f"| {100 * r['cpu'] / r['wall']:.1f} | {r['peak_rss'] - r['idle_rss']:.1f} "
            f"| {r['latency_median']:.2f} | {r['latency_max']:.2f} |"
        )
    if account:
        a = account
        lines += [
            "",
            "## Several triggerers on one account",
            "",
            f"{a['processes']} waiting processes (each a triggerer's loop, default budget of 60 a minute) of "
            f"{a['n']} waits each, conversations of 30-120 s, poll interval 10 s, on one account that allows "
            f"{a['limit']} requests a minute (the emulator answers 429 past it, with `Retry-After`).",
            "",
            "| waits | ended with their outcome | last end s | requests | 429s (all) | 429s after the first minute "
            "| other req/conv | most accepted in 60 s |",
            "|---|---|---|---|---|---|---|---|",
            f"| {a['processes'] * a['n']} | {a['ended']} | {a['wall']:.0f} | {a['requests']} | {a['refused_all']} "
            f"| {a['refused_later']} of {a['later']} ({100 * a['refused_later'] / max(1, a['later']):.1f}%) "
            f"| {a['per_conversation']:.2f} | {a['accepted_max']} |",
        ]
    if paused:
        p = paused
        lines += [
            "",
            "## Waits on paused conversations",
            "",
            f"{p['n']} waits on conversations paused mid-run, poll interval 2 s, budget 60 a minute, for "
            f"{p['seconds']:.0f} s: {p['requests']} requests, {p['events_reads']} of them events reads, at most "
            f"{p['max_in_60s']} in any 60 s.",
        ]
    lines += ["", "Ratios (requests/min, per-trigger and HttpSensorTrigger over coalesced):", ""]
    for n in sorted({r["n"] for r in rows}):
        by = {r["variant"]: r for r in rows if r["n"] == n}
        if "per-trigger" not in by or "HttpSensorTrigger" not in by:
            continue
        base = by["coalesced"]["rpm"]
        lines.append(
            f"- N={n}: per-trigger {by['per-trigger']['rpm'] / base:.1f}x, "
            f"HttpSensorTrigger {by['HttpSensorTrigger']['rpm'] / base:.1f}x"
        )
    lines += [
        "",
        "## Parse-time cost of the operator, sensor and decorator modules",
        "",
        f"Median of {IMPORT_RUNS} fresh interpreters: milliseconds to import, after `import airflow.sdk`, "
        "what a DAG file imports to use each provider: this provider's operator, sensor and decorator "
        "modules, the others' operator and sensor modules (listed in `PARSE_MODULES`). From compiled "
        "bytecode (kept in `.bench/pycache`, filled by one run first that is not counted), as a "
        "deployment parses DAG files. The dbt Cloud and HTTP providers come from the `bench` extra; "
        "neither is a dependency of this provider.",
        "",
        "| provider | ms | ratio to dbt Cloud |",
        "|---|---|---|",
        *(f"| {name} | {ms:.1f} | {ratio(ms, imports)} |" for name, ms in imports.items()),
        "",
    ]
    if span:
        lines += [
            "## Makespan in a real Airflow",
            "",
            f"`airflow standalone` (LocalExecutor, SQLite), the `openhands_nightly_maintenance` example mapped over "
            f"{span['conversations']} repositories, conversations of {span['seconds']:.0f} s, account limit and "
            f"`openhands` pool of {span['limit']}, poll interval 2 s: first task start to last task end.",
            "",
            "| run | makespan s | ideal s | ratio | max alive |",
            "|---|---|---|---|---|",
            f"| {span['state']} | {span['makespan']:.1f} | {span['ideal']:.0f} "
            f"| {span['makespan'] / span['ideal']:.2f} | {span['max_alive']} |",
            "",
        ]
    elif kept:
        lines += kept
    report = "\n".join(lines)
    (REPO / "docs").mkdir(exist_ok=True)
    (REPO / "docs" / "benchmarks.md").write_text(report)
    print("\n" + report)


if __name__ == "__main__":
    main()
