"""``python -m airflow_provider_openhands.testing --port 8123``: run the emulator until Ctrl-C."""

from __future__ import annotations

import argparse
import signal
import threading

from airflow_provider_openhands.testing.emulator import Emulator


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description="Local OpenHands API emulator (V1 and V0), on loopback.")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8123)
    parser.add_argument("--api-key", default="emulator-api-key")
    parser.add_argument("--concurrency-limit", type=int, default=10)
    parser.add_argument("--conversation-seconds", type=float, default=3.0)
    parser.add_argument("--start-seconds", type=float, default=0.5)
    parser.add_argument("--daily-sandbox-limit", type=int, default=None)
    parser.add_argument("--capacity-error-style", choices=("nested", "flat"), default="nested")
    parser.add_argument("--rate-limit-per-minute", type=int, default=None)
    parser.add_argument("--turn-lag-seconds", type=float, default=0.5)
    args = parser.parse_args(argv)
    emulator = Emulator(
        api_key=args.api_key,
        host=args.host,
        port=args.port,
        concurrency_limit=args.concurrency_limit,
        conversation_seconds=args.conversation_seconds,
        start_seconds=args.start_seconds,
        daily_sandbox_limit=args.daily_sandbox_limit,
        capacity_error_style=args.capacity_error_style,
        rate_limit_per_minute=args.rate_limit_per_minute,
        turn_lag_seconds=args.turn_lag_seconds,
    ).start()
    print(f"OpenHands emulator listening on {emulator.url} (stats: {emulator.url}/_emulator/stats)", flush=True)
    stopped = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stopped.set())
    try:
        stopped.wait()
    except KeyboardInterrupt:
        pass
    finally:
        emulator.stop()


if __name__ == "__main__":
    main()
