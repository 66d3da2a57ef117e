"""What a conversation produced, read once after its end: changes, files, structured output, usage.

Pure helpers (no HTTP): :class:`~airflow_provider_openhands.operators._waiting.ConversationWaiter`
does the reads through the hook while the sandbox still runs, before ``pause_when_done`` pauses it.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

from airflow_provider_openhands.exceptions import OpenHandsConfigError, OpenHandsOutputError

#: The file an agent writes its structured output to, at the root of the workspace.
OUTPUT_FILE = "openhands_output.json"
#: Characters of one file's diff kept in the result (XCom); the rest is cut with a marker.
DEFAULT_MAX_DIFF_CHARS = 100_000


def check_output_schema(schema: Any) -> dict[str, Any] | None:
    """A JSON Schema the result must match, checked at DAG parse time (``jsonschema``)."""
    if schema is None:
        return None
    if not isinstance(schema, Mapping):
        raise OpenHandsConfigError(f"output_schema must be a JSON Schema (a dict), got {type(schema).__name__}")
    from jsonschema import exceptions, validators

    try:
        validators.validator_for(schema).check_schema(schema)
    except exceptions.SchemaError as exc:
        raise OpenHandsConfigError(f"output_schema is not a valid JSON Schema: {exc.message}") from None
    return dict(schema)


def output_file(root: str, turn: str | None = None) -> str:
    """Where the agent leaves its structured output (absolute). A follow-up turn gets a file of its
    own (``turn``), so an earlier turn's output can never pass for this one's."""
    name = OUTPUT_FILE if not turn else OUTPUT_FILE.replace(".json", f"_{turn}.json")
    return in_workspace(root, name)


def output_instruction(schema: Mapping[str, Any], path: str) -> str:
    """Appended to the task text: where and in which shape the agent must leave its result."""
    return (
        f"\n\nWhen you have finished, write your result as one JSON object to the file `{path}`. "
        f"It must validate against this JSON Schema:\n```json\n{json.dumps(schema, indent=2, sort_keys=True)}\n```"
    )


def parse_output(
    text: str | None, schema: Mapping[str, Any], final_message: str | None, path: str = OUTPUT_FILE
) -> Any:
    """The agent's structured output, validated; :class:`OpenHandsOutputError` saying what is wrong."""
    from jsonschema import validators

    said = f" The agent's final message: {final_message!r}" if final_message else ""
    if text is None:
        raise OpenHandsOutputError(f"The agent did not write {path}.{said}")
    try:
        value = json.loads(text)
    except ValueError as exc:
        raise OpenHandsOutputError(f"{path} is not JSON ({exc}).{said}") from None
    errors = sorted(validators.validator_for(schema)(schema).iter_errors(value), key=lambda e: list(e.path))
    if errors:
        listed = "; ".join(f"{'/'.join(map(str, e.path)) or '(root)'}: {e.message}" for e in errors[:10])
        raise OpenHandsOutputError(f"{path} does not match output_schema: {listed}.{said}")
    return value


def capped(text: str, limit: int) -> str:
    """``text`` cut to ``limit`` characters, saying so, so a huge diff cannot flood XCom."""
    if len(text) <= limit:
        return text
    return text[:limit] + f"\n[... cut by airflow-provider-openhands: {len(text) - limit} more characters ...]"


#: Where the agent works: the repository is cloned under it, and the agent server wants absolute paths.
WORKSPACE_ROOT = "/workspace/project"


def workspace_path(repository: str | None) -> str:
    """The repository's directory in the agent's workspace, or the workspace itself."""
    if not repository:
        return WORKSPACE_ROOT
    return f"{WORKSPACE_ROOT}/{repository.rstrip('/').rsplit('/', 1)[-1]}"


def in_workspace(root: str, path: str) -> str:
    """A path the agent server accepts: absolute, relative ones taken from the repository's directory."""
    return path if path.startswith("/") else f"{root.rstrip('/')}/{path}"


def usage(state: Mapping[str, Any]) -> dict[str, Any]:
    """Cost and tokens, for the ``usage`` XCom (pushed on success and on failure)."""
    metrics = state.get("metrics") or {}
    return {
        "conversation_id": state.get("conversation_id"),
        "accumulated_cost": metrics.get("accumulated_cost"),
        "prompt_tokens": metrics.get("prompt_tokens"),
        "completion_tokens": metrics.get("completion_tokens"),
        "model_name": metrics.get("model_name"),
    }


def cost_of(state: Mapping[str, Any]) -> float | None:
    cost = (state.get("metrics") or {}).get("accumulated_cost")
    return float(cost) if isinstance(cost, (int, float)) and not isinstance(cost, bool) else None
