"""What a conversation produced, read once after its end: changes, files, structured output, usage.

Pure helpers (no HTTP): :class:`~airflow_provider_openhands.operators._waiting.ConversationWaiter`
does the reads through the hook while the sandbox still runs, before ``pause_when_done`` pauses it.
"""

from __future__ import annotations

import json
import math
import posixpath
from collections.abc import Mapping
from typing import Any

from airflow_provider_openhands.exceptions import OpenHandsConfigError, OpenHandsOutputError

#: The structured-output file's name; :func:`output_file` makes it unique and puts it outside the repository.
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
    unresolvable = _unresolvable_refs(schema)
    if unresolvable:
        raise OpenHandsConfigError(
            f"output_schema has a $ref that cannot be resolved: {unresolvable!r}. A $ref must point inside "
            f"the schema (e.g. '#/$defs/Name') or to a JSON Schema meta-schema; nothing is fetched."
        )
    return dict(schema)


def _unresolvable_refs(schema: Mapping[str, Any]) -> str | None:
    """The first ``$ref`` of ``schema`` that does not resolve, found the way ``jsonschema`` resolves
    them (``referencing``, ``$id`` scopes included), without fetching anything."""
    import referencing.jsonschema
    from jsonschema_specifications import REGISTRY
    from referencing.exceptions import Unresolvable

    specification = referencing.jsonschema.specification_with(
        str(schema.get("$schema", "")), default=referencing.jsonschema.DRAFT202012
    )
    root = specification.create_resource(schema)
    pending = [(REGISTRY.resolver_with_root(root), root)]
    while pending:
        resolver, resource = pending.pop()
        contents = resource.contents
        if isinstance(contents, Mapping) and isinstance(contents.get("$ref"), str):
            try:
                resolver.lookup(contents["$ref"])
            except Unresolvable:
                return contents["$ref"]
        pending.extend((resolver.in_subresource(sub), sub) for sub in resource.subresources())
    return None


def output_file(token: str, git_path: str | None = None) -> str:
    """Where the agent leaves its structured output (absolute): in the workspace, beside the
    repository's directory (``/workspace/project/<repo>``), never in its working tree (so never in
    ``changed_files`` or the agent's PR), under a name unique to the task series and turn
    (``token``), so no earlier file can pass for this one. A ``git_path`` that is the workspace
    itself (or above it) moves the file to its parent."""
    folder = WORKSPACE_ROOT
    if git_path and (folder + "/").startswith(posixpath.normpath(git_path).rstrip("/") + "/"):
        folder = posixpath.dirname(posixpath.normpath(git_path)) or "/"
    return posixpath.join(folder, OUTPUT_FILE.replace(".json", f"_{token}.json"))


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
        value = json.loads(text, parse_constant=_no_constant, parse_float=_finite_float)
    except ValueError as exc:
        raise OpenHandsOutputError(f"{path} is not JSON ({exc}).{said}") from None
    errors = sorted(validators.validator_for(schema)(schema).iter_errors(value), key=lambda e: list(e.path))
    if errors:
        listed = "; ".join(f"{'/'.join(map(str, e.path)) or '(root)'}: {e.message}" for e in errors[:10])
        raise OpenHandsOutputError(f"{path} does not match output_schema: {listed}.{said}")
    return value


def _no_constant(name: str) -> Any:
    """``NaN``, ``Infinity`` and ``-Infinity`` are not JSON (Python's parser accepts them)."""
    raise ValueError(f"{name} is not a JSON number")


def _finite_float(text: str) -> float:
    """A number too large for a float (``1e400``) would become ``inf``, which is not JSON either."""
    value = float(text)
    if not math.isfinite(value):
        raise ValueError(f"{text} is out of range for a JSON number")
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


#: What a task returns (XCom ``return_value``, JSON) at most, in bytes: 1 MB by default.
DEFAULT_MAX_RESULT_BYTES = 1_000_000


def _size(value: Any) -> int:
    return len(json.dumps(value, default=str).encode())


def _texts(state: dict[str, Any], keep_files: bool = False) -> list[tuple[str, dict[str, Any], str]]:
    """The texts of a result that may be cut: (name, their dict, key), diffs and files first
    (``keep_files``: ``files`` holds object-storage paths, never cut)."""
    found: list[tuple[str, dict[str, Any], str]] = []
    for path, sides in (state.get("diff") or {}).items():
        for side, text in (sides or {}).items():
            if isinstance(text, str):
                found.append((f"diff[{path!r}][{side!r}]", sides, side))
    for path, text in (state.get("files") or {}).items():
        if isinstance(text, str) and not keep_files:
            found.append((f"files[{path!r}]", state["files"], path))
    if isinstance(state.get("final_message"), str):
        found.append(("final_message", state, "final_message"))
    return found


def bounded(state: dict[str, Any], max_bytes: int, *, keep_files: bool = False) -> dict[str, Any]:
    """``state`` within ``max_bytes`` of JSON: the longest texts (diffs, files, the final message) are
    cut to one common length, each with a marker, and ``cut`` lists what was cut. A list of changed
    files is cut last; structured output is never cut (it was validated whole): a result that still
    does not fit fails, saying so."""
    size = _size(state)
    if size <= max_bytes:
        return state
    texts = _texts(state, keep_files)
    originals = {name: holder[key] for name, holder, key in texts}

    def cut_to(length: int) -> int:
        """Every text cut to ``length`` (with its marker, and its line in ``cut``): the size then."""
        state["cut"] = []
        for name, holder, key in texts:
            holder[key] = capped(originals[name], length)
            if holder[key] != originals[name]:
                state["cut"].append(f"{name}: {length} of {len(originals[name])} characters kept")
        return _size(state)

    low, high = 0, max((len(text) for text in originals.values()), default=0)
    while low < high:  # the longest common length at which everything fits
        middle = (low + high + 1) // 2
        if cut_to(middle) <= max_bytes:
            low = middle
        else:
            high = middle - 1
    cut_to(low)
    cut: list[str] = state["cut"]
    changes = state.get("changed_files")
    if _size(state) > max_bytes and isinstance(changes, list) and changes:

        def with_changes(keep: int) -> dict[str, Any]:
            line = f"changed_files: {keep} of {len(changes)} kept"
            return {**state, "changed_files": changes[:keep], "cut": [*cut, line]}

        low, high = 0, len(changes)
        while low < high:  # the most changes that fit, the line saying so included
            middle = (low + high + 1) // 2
            if _size(with_changes(middle)) <= max_bytes:
                low = middle
            else:
                high = middle - 1
        state["changed_files"] = changes[:low]
        cut.append(f"changed_files: {low} of {len(changes)} kept")
    state["cut"] = cut
    if _size(state) > max_bytes:
        raise OpenHandsOutputError(
            f"The result of conversation {state.get('conversation_id')} is over max_result_bytes ({max_bytes}) "
            f"even with its texts cut ({_size(state)} bytes; the structured output alone is "
            f"{_size(state.get('output'))}): raise max_result_bytes, or write large files with output_path"
        )
    return state
