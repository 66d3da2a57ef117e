"""Run the real open-source OpenHands app server (PyPI ``openhands-ai``) on loopback, for tests.

Started by ``tests/harness/real_openhands.py`` with the Python of the cached ``openhands-ai`` venv (it
imports ``openhands``, so it cannot run in the project's venv). It changes the installed package
in memory only:

1. The process sandbox waits a hard-coded 30 s for an agent server; on a loaded 2-core machine
   one needs 15-55 s to import. Raised to ``REAL_OH_AGENT_START_TIMEOUT`` (default 300 s).
2. The process sandbox reports an idle agent server (psutil ``sleeping``) as STARTING forever, so
   no conversation would ever run: a live process that is not stopped counts as RUNNING (the
   server still demotes it to ERROR when its health check fails).
3. The machine has ``/.dockerenv``, so the server believes it runs in Docker and rewrites
   ``localhost`` to ``host.docker.internal``: turned off.
4. Agents are given no browser tool: the server always asks for one, and an agent server without
   Chromium on the machine then refuses to create the conversation (HTTP 500, start task ERROR).
   The fake LLM never browses.
5. Two sandboxes started together can be handed the same port (the port is probed, then bound
   by the agent server seconds later): a port already handed out is skipped. Starting
   conversations one at a time is still the rule (booting two at once on 2 cores is slow).
6. The process sandbox's working directory is ``.``, so the plan agent's PLAN.md path is the relative
   ``./.agents_tmp/PLAN.md``, which the agent server refuses ("plan_path must be an absolute path"):
   every plan conversation's start task would end ERROR. A relative plan path is dropped, so the
   planning tool falls back to ``<agent working directory>/.agents_tmp/PLAN.md`` (absolute).

Fault injection (for tests): while the file ``$REAL_OH_FAULT_DIR/unhealthy-<sandbox id>`` holds a
time in the future (epoch seconds), that sandbox's health check counts as failed, so the server
reports it exactly as it does when an agent server is slow to answer: sandbox ``ERROR``, no URL,
no session key, no execution status. The harness's ``make_unhealthy`` writes it.

It also appends one JSON line per HTTP request to ``REAL_OH_REQUEST_LOG`` (method, path, query,
status, seconds, ``internal`` for the agent servers' webhook calls), so the harness can count the
requests a test or a DAG sent.

Usage: python real_openhands_serve.py   (env: APP_PORT, REAL_OH_AGENT_START_TIMEOUT,
REAL_OH_REQUEST_LOG)
"""

from __future__ import annotations

import json
import os
import socket
import threading
import time

import psutil
import uvicorn
from openhands.app_server.app_conversation import live_status_app_conversation_service as live
from openhands.app_server.errors import SandboxError
from openhands.app_server.sandbox import process_sandbox_service as pss
from openhands.app_server.sandbox.sandbox_models import SandboxStatus
from openhands.app_server.utils import docker_utils, environment

_TIMEOUT = int(os.environ.get("REAL_OH_AGENT_START_TIMEOUT", "300"))
_original_wait = pss.ProcessSandboxService._wait_for_server_ready
_handed_out: set[int] = set()


async def _wait_for_server_ready(self, port, timeout=_TIMEOUT):
    return await _original_wait(self, port, max(timeout, _TIMEOUT))


def _get_process_status(self, process_info):
    try:
        process = psutil.Process(process_info.pid)
        if not process.is_running():
            return SandboxStatus.MISSING
        status = process.status()
        if status == psutil.STATUS_STOPPED:
            return SandboxStatus.PAUSED
        if status in (psutil.STATUS_ZOMBIE, psutil.STATUS_DEAD):
            return SandboxStatus.MISSING
        return SandboxStatus.RUNNING
    except (psutil.NoSuchProcess, psutil.AccessDenied):
        return SandboxStatus.MISSING


def _find_unused_port(self) -> int:
    in_use = _handed_out | {info.port for info in pss._processes.values()}
    for port in range(self.base_port, self.base_port + 10000):
        if port in in_use:
            continue
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
            try:
                probe.bind(("", port))
            except OSError:
                continue
        _handed_out.add(port)
        return port
    raise SandboxError("No available ports found")


_original_tools = live.get_default_tools
_original_builtins = live.register_builtins_agents


def _get_default_tools(enable_browser=True, **kwargs):
    return _original_tools(enable_browser=False, **kwargs)


def _register_builtins_agents(*args, enable_browser=True, **kwargs):
    return _original_builtins(*args, enable_browser=False, **kwargs)


_original_plan_path = live.LiveStatusAppConversationService._compute_plan_path


def _compute_plan_path(self, working_dir, git_provider):
    path = _original_plan_path(self, working_dir, git_provider)
    return path if os.path.isabs(path) else None


live.LiveStatusAppConversationService._compute_plan_path = _compute_plan_path
live.get_default_tools = _get_default_tools
live.register_builtins_agents = _register_builtins_agents
_original_info = pss.ProcessSandboxService._process_to_sandbox_info


def _unhealthy(sandbox_id: str) -> bool:
    path = os.path.join(os.environ.get("REAL_OH_FAULT_DIR", "/nonexistent"), f"unhealthy-{sandbox_id}")
    try:
        with open(path) as handle:
            return time.time() < float(handle.read().strip() or 0)
    except (OSError, ValueError):
        return False


async def _process_to_sandbox_info(self, sandbox_id, process_info):
    info = await _original_info(self, sandbox_id, process_info)
    if info.status == SandboxStatus.RUNNING and _unhealthy(sandbox_id):
        # What the server builds when the health check fails.
        update = {"status": SandboxStatus.ERROR, "exposed_urls": None, "session_api_key": None}
        info = info.model_copy(update=update)
    return info


pss.ProcessSandboxService._process_to_sandbox_info = _process_to_sandbox_info
docker_utils.is_running_in_docker = lambda: False
environment.is_running_in_docker = lambda: False
pss.ProcessSandboxService._wait_for_server_ready = _wait_for_server_ready
pss.ProcessSandboxService._get_process_status = _get_process_status
pss.ProcessSandboxService._find_unused_port = _find_unused_port


class RequestLog:
    """ASGI middleware: one JSON line per HTTP request."""

    def __init__(self, app, path: str | None) -> None:
        self.app = app
        self.path = path
        self.lock = threading.Lock()

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http" or not self.path:
            return await self.app(scope, receive, send)
        started = time.time()
        status = {"code": None}

        async def send_and_note(message):
            if message["type"] == "http.response.start":
                status["code"] = message["status"]
            await send(message)

        try:
            await self.app(scope, receive, send_and_note)
        finally:
            path = scope.get("path", "")
            entry = {
                "t": round(started, 3),
                "method": scope.get("method"),
                "path": path,
                "query": scope.get("query_string", b"").decode("latin-1"),
                "status": status["code"],
                "seconds": round(time.time() - started, 3),
                "internal": path.startswith("/api/v1/webhooks"),
            }
            with self.lock, open(self.path, "a") as handle:
                handle.write(json.dumps(entry) + "\n")


if __name__ == "__main__":
    from openhands.app_server.app import app

    uvicorn.run(
        RequestLog(app, os.environ.get("REAL_OH_REQUEST_LOG")),
        host="127.0.0.1",
        port=int(os.environ["APP_PORT"]),
        log_level=os.environ.get("REAL_OH_LOG_LEVEL", "info"),
    )
