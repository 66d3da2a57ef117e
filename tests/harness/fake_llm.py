#!/usr/bin/env python3
"""A scripted OpenAI-compatible chat-completions server for the real OpenHands server's agents.

Standard library only; binds 127.0.0.1. Every request body is logged (``--log-dir``), with the
tools the agent offered, so tool names and argument schemas can be read back.

A conversation is scripted by markers in its task text (the current turn's user message):

* ``[fake-llm finish="message text"]``: answer with a call to the ``finish`` tool carrying that
  message (default ``"done"``).
* ``[fake-llm fail]``: HTTP 500 on every agent call of the turn (the conversation ends in
  ``error``).
* ``[fake-llm seconds=N]``: wait N seconds before the turn's first answer.
* ``[fake-llm write=path:content]``: call the agent's file-editor tool to create ``path`` with
  ``content``, then finish on the next call. A first call to the ``terminal`` tool makes the
  file's folder and, with ``pwd``, finds the agent's working directory (its workspace), where a
  relative path is taken.
  Quote values with spaces: ``[fake-llm write="notes/a.txt:hello world"]``.
* ``[fake-llm run="shell command"]``: call the ``terminal`` tool with that command first (under
  confirmation mode the agent then waits for it to be confirmed), then finish with the ``finish=``
  message followed by `` | tool: <what the tool answered>``: the command's output if it ran,
  ``Action rejected: <reason>`` if it was rejected. So the final message shows what the agent got.
* ``[fake-llm plan="plan text"]``: for the planning agent (``agent_type: "plan"``, whose tools are
  ``glob``, ``grep`` and ``planning_file_editor``): call ``planning_file_editor`` to write the plan
  text under PLAN.md's first header (``str_replace``; the tool created the file with the empty
  section headers, and its description names where), then finish like ``run=`` (the ``finish=``
  message, `` | tool: `` and what the tool answered). Under confirmation mode the edit is the
  action that may wait.

Several keys may share one marker: ``[fake-llm seconds=5 finish="ok"]``. A turn without a marker
finishes with ``"done"``. Requests without tools (title generation) get a short plain answer.

Usage: python fake_llm.py --port PORT [--log-dir DIR]   (PORT 0: a free port; the line
``fake_llm listening on 127.0.0.1:<port>`` on stderr names it)
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shlex
import sys
import threading
import time
import uuid
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

MODEL = "fake"
MARKER = re.compile(r"\[fake-llm\b([^\]]*)\]")
FILE_TOOLS = ("file_editor", "str_replace_editor")


def text_of(content) -> str:
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        return "\n".join(part.get("text", "") for part in content if isinstance(part, dict))
    return ""


def directives(text: str) -> dict[str, str]:
    found: dict[str, str] = {}
    for match in MARKER.finditer(text or ""):
        try:
            words = shlex.split(match.group(1))
        except ValueError:
            words = match.group(1).split()
        for word in words:
            key, sep, value = word.partition("=")
            found[key] = value if sep else "true"
    return found


def fill_args(tool: dict) -> dict:
    """Arguments for a tool from its JSON schema's required fields."""
    params = (tool.get("function") or {}).get("parameters") or {}
    props = params.get("properties") or {}
    args = {}
    for name in params.get("required") or []:
        schema = props.get(name) or {}
        if "enum" in schema:
            values = schema["enum"]
            args[name] = "LOW" if "LOW" in values else values[0]
        elif schema.get("type") == "boolean":
            args[name] = False
        elif schema.get("type") in ("integer", "number"):
            args[name] = 0
        elif schema.get("type") == "array":
            args[name] = []
        else:
            args[name] = ""
    return args


def turn_results(messages: list[dict], last_user: int) -> list[str]:
    """The tool results the agent sent back in this turn, in order."""
    return [text_of(m.get("content")) for m in messages[last_user + 1 :] if m.get("role") == "tool"]


def finish_with_results(tools: dict, turn: dict, messages: list[dict], last_user: int) -> dict:
    """A ``finish`` call whose message carries what the turn's tools answered (what reached the agent)."""
    said = " ".join(" ".join(turn_results(messages, last_user)).split())[:300] or "nothing"
    args = fill_args(tools["finish"])
    args["message"] = f"{turn.get('finish') or 'done'} | tool: {said}"
    return tool_call("finish", args)


def plan(body: dict) -> tuple[int, dict | None, float]:
    """(HTTP status, assistant message or None, seconds to wait) for one request."""
    messages = body.get("messages") or []
    tools = {(t.get("function") or {}).get("name"): t for t in body.get("tools") or []}
    last_user = max((i for i, m in enumerate(messages) if m.get("role") == "user"), default=-1)
    turn = directives(text_of(messages[last_user].get("content")) if last_user >= 0 else "")
    calls_this_turn = sum(1 for m in messages[last_user + 1 :] if m.get("role") == "assistant")
    wait = float(turn.get("seconds") or 0) if calls_this_turn == 0 else 0.0
    if not tools:
        return 200, {"role": "assistant", "content": "Fake LLM answer"}, 0.0
    if "fail" in turn:
        return 500, None, wait
    if "run" in turn and "terminal" in tools:
        if calls_this_turn == 0:
            args = fill_args(tools["terminal"])
            args.update(command=turn["run"], summary="run the scripted command")
            return 200, tool_call("terminal", args), wait
        if "finish" in tools:
            return 200, finish_with_results(tools, turn, messages, last_user), wait
    if "plan" in turn and "planning_file_editor" in tools:
        if calls_this_turn == 0:
            return 200, tool_call("planning_file_editor", plan_edit(tools["planning_file_editor"], turn["plan"])), wait
        if "finish" in tools:
            return 200, finish_with_results(tools, turn, messages, last_user), wait
    editor = next((n for n in FILE_TOOLS if n in tools), None)
    if "write" in turn and editor is not None:
        path, _, content = turn["write"].partition(":")
        shell = "terminal" in tools
        if shell and calls_this_turn == 0:
            # The file tool wants an absolute path in an existing folder, and no prompt names the
            # workspace: the shell makes the folder and says where it is.
            args = fill_args(tools["terminal"])
            folder = shlex.quote(os.path.dirname(path) or ".")
            args.update(command=f"mkdir -p {folder} && pwd", summary="prepare the folder")
            return 200, tool_call("terminal", args), wait
        if calls_this_turn == int(shell):
            if not path.startswith("/"):
                results = turn_results(messages, last_user)
                lines = [line.strip() for line in (results[0] if results else "").splitlines()]
                cwd = next((line for line in lines if line.startswith("/")), os.getcwd())
                path = os.path.join(cwd, path)
            args = fill_args(tools[editor])
            args.update(command="create", path=path, file_text=content, summary=f"create {path}")
            return 200, tool_call(editor, args), wait
    if "finish" in tools:
        args = fill_args(tools["finish"])
        args["message"] = turn.get("finish") or "done"
        return 200, tool_call("finish", args), wait
    return 200, {"role": "assistant", "content": turn.get("finish") or "done"}, wait


def plan_edit(tool: dict, text: str) -> dict:
    """``planning_file_editor`` arguments that write ``text`` under PLAN.md's first header (the path
    is in the tool's description: "Your PLAN.md location: <path>")."""
    description = (tool.get("function") or {}).get("description") or ""
    found = re.search(r"Your PLAN\.md location: (\S+)", description)
    path = found.group(1) if found else os.path.join(os.getcwd(), ".agents_tmp", "PLAN.md")
    args = fill_args(tool)
    args.update(command="str_replace", path=path, old_str="# 1. OBJECTIVE\n", new_str=f"# 1. OBJECTIVE\n\n{text}\n")
    args["summary"] = f"write the plan to {path}"
    return args


def tool_call(name: str, args: dict) -> dict:
    call = {
        "id": "call_" + uuid.uuid4().hex[:24],
        "type": "function",
        "function": {"name": name, "arguments": json.dumps(args)},
    }
    return {"role": "assistant", "content": None, "tool_calls": [call]}


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    log_dir: str | None = None
    counter = 0
    counter_lock = threading.Lock()

    def log_message(self, format, *args):
        sys.stderr.write("fake_llm %s\n" % (format % args))

    def _send_json(self, code: int, obj: dict) -> None:
        data = json.dumps(obj).encode()
        self.send_response(code)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def do_GET(self):
        if self.path.rstrip("/").endswith("/models"):
            model = {"id": MODEL, "object": "model", "created": 0, "owned_by": "fake"}
            return self._send_json(200, {"object": "list", "data": [model]})
        return self._send_json(200, {"status": "ok"})

    def _log(self, body: dict, status: int, message: dict | None) -> None:
        if not self.log_dir:
            return
        with Handler.counter_lock:
            Handler.counter += 1
            number = Handler.counter
        entry = {
            "path": self.path,
            "tools": [(t.get("function") or {}).get("name") for t in body.get("tools") or []],
            "answer_status": status,
            "answer": message,
            "body": body,
        }
        with open(os.path.join(self.log_dir, f"{number:04d}.json"), "w") as handle:
            json.dump(entry, handle, indent=1)

    def do_POST(self):
        length = int(self.headers.get("Content-Length") or 0)
        raw = self.rfile.read(length) if length else b"{}"
        try:
            body = json.loads(raw or b"{}")
        except ValueError:
            body = {}
        if not self.path.rstrip("/").endswith("/chat/completions"):
            error = {"message": f"fake_llm: unsupported path {self.path}", "type": "invalid_request_error"}
            return self._send_json(404, {"error": error})
        status, message, wait = plan(body)
        self._log(body, status, message)
        if wait:
            time.sleep(wait)
        if status != 200:
            return self._send_json(status, {"error": {"message": "fake_llm: forced failure", "type": "server_error"}})
        finish_reason = "tool_calls" if message.get("tool_calls") else "stop"
        cid = "chatcmpl-" + uuid.uuid4().hex[:24]
        created = int(time.time())
        usage = {"prompt_tokens": 10, "completion_tokens": 5, "total_tokens": 15}
        if not body.get("stream"):
            choice = {"index": 0, "message": message, "finish_reason": finish_reason}
            answer = {"id": cid, "object": "chat.completion", "created": created, "model": MODEL}
            return self._send_json(200, {**answer, "choices": [choice], "usage": usage})
        self.send_response(200)
        self.send_header("Content-Type", "text/event-stream")
        self.send_header("Cache-Control", "no-cache")
        self.send_header("Connection", "close")
        self.end_headers()

        def chunk(delta, reason=None, with_usage=False):
            obj = {"id": cid, "object": "chat.completion.chunk", "created": created, "model": MODEL}
            obj["choices"] = [{"index": 0, "delta": delta, "finish_reason": reason}]
            if with_usage:
                obj["usage"] = usage
            self.wfile.write(b"data: " + json.dumps(obj).encode() + b"\n\n")

        if message.get("tool_calls"):
            call = message["tool_calls"][0]
            head = {"index": 0, "id": call["id"], "type": "function"}
            head["function"] = {"name": call["function"]["name"], "arguments": ""}
            chunk({"role": "assistant", "content": None, "tool_calls": [head]})
            chunk({"tool_calls": [{"index": 0, "function": {"arguments": call["function"]["arguments"]}}]})
        else:
            chunk({"role": "assistant", "content": message["content"]})
        chunk({}, finish_reason, with_usage=True)
        self.wfile.write(b"data: [DONE]\n\n")
        self.wfile.flush()
        self.close_connection = True


class Server(ThreadingHTTPServer):
    daemon_threads = True


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--port", type=int, default=0)
    parser.add_argument("--log-dir", default=None)
    args = parser.parse_args(argv)
    if args.log_dir:
        os.makedirs(args.log_dir, exist_ok=True)
    Handler.log_dir = args.log_dir
    server = Server(("127.0.0.1", args.port), Handler)
    sys.stderr.write(f"fake_llm listening on 127.0.0.1:{server.server_address[1]}\n")
    sys.stderr.flush()
    server.serve_forever()


if __name__ == "__main__":
    main()
