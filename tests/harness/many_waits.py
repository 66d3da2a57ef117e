"""A triggerer's worth of waits in one process: ``python -m tests.harness.many_waits IDS_FILE``.

Runs one :class:`OpenHandsConversationTrigger` per conversation id of ``IDS_FILE`` (JSON, the
emulator's ``seed`` answer) in one asyncio loop, as a triggerer process does, on the connection
``openhands_default`` from the environment. ``--window`` shrinks the request budget's minute (a
scaled-down test); ``--poll-interval`` is the triggers'. Prints one JSON line: the outcomes, and
what this process's request budget took, heard and ended at.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]


def spawn(ids_file: Path, connection: str, *args: str, home: Path | None = None) -> subprocess.Popen:
    """This module in a process of its own, on ``connection`` (JSON) as ``openhands_default``; it prints
    ``ready`` once it has imported what it needs, then waits for ``ids_file``. ``home``: an Airflow
    home of its own (a test session's home may hold a fernet key that Airflow 2.11 fails to use with
    cryptography 51 when it reads a connection with a password)."""
    env = {**os.environ, "AIRFLOW_CONN_OPENHANDS_DEFAULT": connection}
    if home is not None:
        env["AIRFLOW_HOME"] = str(home)
    return subprocess.Popen(
        [sys.executable, "-m", "tests.harness.many_waits", str(ids_file), *args],
        cwd=REPO,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


async def wait_all(ids: list[str], poll_interval: float, timeout: float) -> list[dict]:
    """Each wait's event payload, in the order of ``ids``."""
    from airflow_provider_openhands.triggers.openhands import OpenHandsConversationTrigger

    async def one(conversation_id: str) -> dict:
        trigger = OpenHandsConversationTrigger(
            openhands_conn_id="openhands_default",
            conversation_id=conversation_id,
            poll_interval=poll_interval,
            end_time=time.time() + timeout,
        )
        async for event in trigger.run():
            return event.payload
        return {"outcome": "no event"}

    return await asyncio.gather(*(one(conversation_id) for conversation_id in ids))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("ids_file", help="JSON list of {'id': ...} (the emulator's seed answer); waited for")
    parser.add_argument("--window", type=float, default=60.0, help="seconds of the request budget's minute")
    parser.add_argument("--poll-interval", type=float, default=10.0, help="the triggers' poll interval (s)")
    parser.add_argument("--timeout", type=float, default=600.0, help="each wait's deadline (s from now)")
    args = parser.parse_args()
    from airflow_provider_openhands.hooks import budget

    budget.RequestBudget.window = args.window
    from airflow_provider_openhands.triggers.openhands import OpenHandsConversationTrigger  # noqa: F401 (imports first)

    print("ready", flush=True)  # the ids file may come later: several processes start their waits together
    ids_file = Path(args.ids_file)
    while not ids_file.exists():
        time.sleep(0.01)
    ids = [item["id"] for item in json.loads(ids_file.read_text())]
    started = time.time()
    outcomes = [event["outcome"] for event in asyncio.run(wait_all(ids, args.poll_interval, args.timeout))]
    spent = list(budget._budgets.values())
    print(
        json.dumps(
            {
                "outcomes": outcomes,
                "wall": time.time() - started,
                "taken": sum(b.taken for b in spent),
                "refused": sum(b.refused for b in spent),
                "limit": [b.limit for b in spent],
            }
        )
    )


if __name__ == "__main__":
    main()
