"""``python -m airflow_provider_openhands.testing --port 8123`` (or ``openhands-emulator``): run the
emulator until Ctrl-C. Each knob of the :class:`Emulator` is a flag, its name with dashes; the
per-repository ones take ``owner/repo=value`` and repeat. One repository fails, another runs long::

    openhands-emulator --outcomes-by-repository acme/web=error --seconds-by-repository acme/api=600
"""

from __future__ import annotations

import argparse
import signal
import threading
from typing import Any

from airflow_provider_openhands.testing.emulator import OUTCOMES, Emulator


def _repository_value(text: str) -> tuple[str, str]:
    repository, sep, value = text.rpartition("=")
    if not sep or not repository or not value:
        raise argparse.ArgumentTypeError(f"expected owner/repo=value, not {text!r}")
    return repository, value


def _repository_outcome(text: str) -> tuple[str, str]:
    repository, outcome = _repository_value(text)
    if outcome not in OUTCOMES:
        raise argparse.ArgumentTypeError(f"{text!r}: the outcome is one of {', '.join(OUTCOMES)}")
    return repository, outcome


def _repository_seconds(text: str) -> tuple[str, float]:
    repository, value = _repository_value(text)
    try:
        return repository, float(value)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r}: expected owner/repo=<seconds>") from None


def parser() -> argparse.ArgumentParser:
    """The command line: one flag per :class:`Emulator` keyword argument (``dest`` is its name)."""
    parser = argparse.ArgumentParser(description="Local OpenHands API emulator (V1 and V0), on loopback.")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8123)
    parser.add_argument("--api-key", default="emulator-api-key")
    parser.add_argument("--concurrency-limit", type=int, default=10)
    parser.add_argument("--conversation-seconds", type=float, default=3.0)
    parser.add_argument("--start-seconds", type=float, default=0.5)
    parser.add_argument("--latency", type=float, default=0.0, help="seconds before each API answer")
    parser.add_argument("--daily-sandbox-limit", type=int, default=None)
    parser.add_argument("--capacity-error-style", choices=("nested", "flat"), default="nested")
    parser.add_argument("--rate-limit-per-minute", type=int, default=None)
    parser.add_argument(
        "--rate-limit-window", type=float, default=60.0, help="seconds of the rate limit's minute (tests scale it)"
    )
    parser.add_argument("--turn-lag-seconds", type=float, default=0.5)
    parser.add_argument("--missing-file-answer", choices=("404", "empty"), default="404")
    parser.add_argument(
        "--outcomes-by-repository",
        type=_repository_outcome,
        action="append",
        default=[],
        metavar="OWNER/REPO=OUTCOME",
        help=f"how the agent ends on that repository ({', '.join(OUTCOMES)}); repeatable",
    )
    parser.add_argument(
        "--seconds-by-repository",
        type=_repository_seconds,
        action="append",
        default=[],
        metavar="OWNER/REPO=SECONDS",
        help="how long the agent runs on that repository (else --conversation-seconds); repeatable",
    )
    return parser


def emulator_kwargs(argv: list[str] | None = None) -> dict[str, Any]:
    """The :class:`Emulator` keyword arguments a command line asks for."""
    kwargs = vars(parser().parse_args(argv))
    for knob in ("outcomes_by_repository", "seconds_by_repository"):
        kwargs[knob] = dict(kwargs[knob])
    return kwargs


def main(argv: list[str] | None = None) -> None:
    try:
        emulator = Emulator(**emulator_kwargs(argv)).start()
    except ValueError as exc:  # a knob's value the emulator refuses
        parser().error(str(exc))
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
