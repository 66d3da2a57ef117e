"""What a user may ask for when starting a conversation, checked before any request is sent."""

from __future__ import annotations

import math
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from airflow_provider_openhands.api.state import API_VERSIONS, KNOWN_STATUSES, V0, V1
from airflow_provider_openhands.exceptions import OpenHandsConfigError

GIT_PROVIDERS = {
    V1: frozenset(
        {"github", "gitlab", "bitbucket", "bitbucket_data_center", "forgejo", "azure_devops", "enterprise_sso"}
    ),
    V0: frozenset({"github", "gitlab", "bitbucket", "enterprise_sso"}),
}
# owner/repo, or group/subgroup/repo as GitLab allows; never a URL.
_REPOSITORY = re.compile(r"^[A-Za-z0-9_.-]+(/[A-Za-z0-9_.-]+)+$")
# A conversation id as V1 and V0 write it: a UUID, with or without its dashes.
_CONVERSATION_ID = re.compile(r"^[0-9a-fA-F]{8}(-?[0-9a-fA-F]{4}){3}-?[0-9a-fA-F]{12}$")


def is_templated(value: Any) -> bool:
    """A value still holding Jinja is checked after rendering, not at DAG parse time."""
    if isinstance(value, str):
        return "{{" in value or "{%" in value
    if isinstance(value, Mapping):
        return any(is_templated(v) for v in value.values())
    if isinstance(value, (list, tuple)):
        return any(is_templated(v) for v in value)
    return False


def check_message(value: Any, name: str = "initial_user_msg") -> str:
    if not isinstance(value, str) or not value.strip():
        raise OpenHandsConfigError(f"{name} must be a non-empty string telling the agent what to do, got {value!r}")
    return value


def check_repository(value: Any, name: str = "repository") -> str | None:
    if value is None:
        return None
    if (
        not isinstance(value, str)
        or not _REPOSITORY.match(value.strip())
        or any(part in (".", "..") for part in value.strip().split("/"))
    ):
        raise OpenHandsConfigError(f"{name} must look like 'owner/repo' (no URL, no '.' or '..'), got {value!r}")
    return value.strip()


def _short_repr(value: Any, limit: int = 80) -> str:
    text = repr(value)
    return text if len(text) <= limit else text[:limit] + "..."


def check_conversation_id(value: Any, name: str = "conversation_id") -> str:
    """A conversation id, or the start operator's or the sensor's result (a dict holding one)."""
    if isinstance(value, Mapping) and "conversation_id" in value:
        value = value["conversation_id"]
    if not isinstance(value, str) or not _CONVERSATION_ID.match(value.strip()):
        raise OpenHandsConfigError(
            f"{name} must be a conversation id (a UUID, e.g. the start operator's output) or a result "
            f"holding one under 'conversation_id', got {type(value).__name__} {_short_repr(value)}"
        )
    return value.strip()


def check_git_provider(value: Any, api_version: str | None = None) -> str | None:
    if value is None:
        return None
    allowed = GIT_PROVIDERS.get(api_version or V1, GIT_PROVIDERS[V1])
    if value not in allowed:
        raise OpenHandsConfigError(f"git_provider must be one of {sorted(allowed)}, got {value!r}")
    return value


def check_api_version(value: Any) -> str:
    version = str(value).strip().lower() if value is not None else V1
    if version not in API_VERSIONS:
        raise OpenHandsConfigError(f"api_version must be one of {list(API_VERSIONS)}, got {value!r}")
    return version


def check_positive(value: Any, name: str) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or value <= 0 or not math.isfinite(value):
        raise OpenHandsConfigError(f"{name} must be a finite number greater than 0, got {value!r}")
    return float(value)


def check_statuses(values: Iterable[str] | None, name: str, default: frozenset[str]) -> frozenset[str]:
    if values is None:
        return default
    if isinstance(values, str):
        values = [values]
    statuses = frozenset(str(v).lower() for v in values)
    unknown = statuses - KNOWN_STATUSES
    if unknown:
        raise OpenHandsConfigError(f"{name} has unknown statuses {sorted(unknown)}; known: {sorted(KNOWN_STATUSES)}")
    return statuses


@dataclass(frozen=True)
class StartOptions:
    """A start request in the seed's vocabulary, mapped to V0 or V1 by :mod:`.endpoints`."""

    initial_user_msg: str
    repository: str | None = None
    selected_branch: str | None = None
    git_provider: str | None = None
    title: str | None = None
    conversation_id: str | None = None
    extra_body: Mapping[str, Any] = field(default_factory=dict)
    #: V1 only: where the conversation's spend is attributed (DAG, task, run, map index).
    observability_tags: tuple[str, ...] = ()
    observability_metadata: Mapping[str, Any] = field(default_factory=dict)

    def checked(self, api_version: str) -> StartOptions:
        """Raise :class:`OpenHandsConfigError` naming the first bad parameter."""
        check_message(self.initial_user_msg)
        check_repository(self.repository)
        check_git_provider(self.git_provider, api_version)
        if self.extra_body is not None and not isinstance(self.extra_body, Mapping):
            raise OpenHandsConfigError(f"extra_body must be a dict, got {type(self.extra_body).__name__}")
        return self
