"""What an OpenHands task tells the rest of Airflow: asset events and OpenLineage facets.

The operator and the sensor call into this module from small methods (``finish`` records the
final state, ``post_execute`` fills the outlets' asset events, ``get_openlineage_facets_on_*``
build the lineage), importing it only then: a DAG file's parse imports neither this module nor
OpenLineage. The OpenLineage classes come from the OpenLineage provider
(``pip install "airflow-provider-openhands[openlineage]"``), imported in the facet functions only.

Asset events (Airflow 3): every ``Asset`` among a task's ``outlets`` gets an event whose ``extra``
holds :func:`asset_extra` (conversation id and URL, status, PR numbers and URLs, cost, model,
repository). On Airflow 2.11 the outlets are emitted by Airflow without that extra.
"""

from __future__ import annotations

import logging
from typing import Any

log = logging.getLogger(__name__)

#: Where an ``owner/repo`` lives, as an OpenLineage dataset namespace.
GIT_NAMESPACES = {
    "github": "https://github.com",
    "gitlab": "https://gitlab.com",
    "bitbucket": "https://bitbucket.org",
    "azure_devops": "https://dev.azure.com",
    "forgejo": "https://codeberg.org",
}
#: The ``run`` facet's key in OpenLineage events.
RUN_FACET_KEY = "openhands_conversation"


def _airflow_3() -> bool:
    from airflow.providers.common.compat.version_compat import AIRFLOW_V_3_0_PLUS

    return AIRFLOW_V_3_0_PLUS


def record_state(task: Any, state: dict[str, Any]) -> None:
    """Keep a conversation's final state on the task, for the asset event and the lineage."""
    task._openhands_state = dict(state)


def conversation_summary(task: Any, result: Any = None) -> dict[str, Any]:
    """The conversation a task started or waited on, as far as it is known: from its final state,
    else from what the task knows (the lifecycle's or sensor's conversation id)."""
    state = getattr(task, "_openhands_state", None)
    if state is None and isinstance(result, dict) and "conversation_id" in result:
        state = result
    if state:
        metrics = state.get("metrics") or {}
        return {
            "conversation_id": state.get("conversation_id"),
            "conversation_url": state.get("url"),
            "status": state.get("status"),
            "pr_numbers": list(state.get("pr_number") or []),
            "pr_urls": list(state.get("pr_urls") or []),
            "cost": metrics.get("accumulated_cost"),
            "model": metrics.get("model_name"),
            "repository": state.get("selected_repository") or _static_repository(task),
            "git_provider": state.get("git_provider") or getattr(task, "git_provider", None),
        }
    lifecycle = getattr(task, "_lifecycle", None)
    conversation_id = getattr(lifecycle, "conversation_id", None) or (result if isinstance(result, str) else None)
    if conversation_id is None and not hasattr(task, "_lifecycle"):  # the sensor
        conversation_id = getattr(task, "conversation_id", None)
    if isinstance(conversation_id, str) and "{{" in conversation_id:
        conversation_id = None
    url = None
    if conversation_id:
        try:
            url = task.hook.conversation_url(conversation_id)
        except Exception:
            url = None
    return {
        "conversation_id": conversation_id,
        "conversation_url": url,
        "status": "running" if conversation_id else None,  # started, not waited on (or not yet ended)
        "pr_numbers": [],
        "pr_urls": [],
        "cost": None,
        "model": None,
        "repository": _static_repository(task),
        "git_provider": getattr(task, "git_provider", None),
    }


def _static_repository(task: Any) -> str | None:
    repository = getattr(task, "repository", None)
    return repository if isinstance(repository, str) and "{{" not in repository else None


# -- asset events ----------------------------------------------------------------------------------


def asset_extra(summary: dict[str, Any]) -> dict[str, Any]:
    """The ``extra`` of an OpenHands task's asset events (JSON: it is stored with the event)."""
    return {
        key: summary.get(key)
        for key in ("conversation_id", "conversation_url", "status", "pr_numbers", "pr_urls", "cost", "repository")
    }


def emit_asset_events(task: Any, context: Any, result: Any = None) -> None:
    """Airflow 3: put the conversation into the ``extra`` of every ``Asset`` outlet's event."""
    outlets = [o for o in (getattr(task, "outlets", None) or []) if type(o).__name__ in ("Asset", "Dataset")]
    if not outlets or not _airflow_3():
        return
    events = context.get("outlet_events") if hasattr(context, "get") else None
    if events is None:
        return
    extra = asset_extra(conversation_summary(task, result))
    for outlet in outlets:
        try:
            events[outlet].extra.update(extra)
        except Exception as exc:  # never fail a task that succeeded over its asset event's extra
            log.warning("Could not set the extra of the asset event for %s: %s", outlet, exc)


# -- OpenLineage -----------------------------------------------------------------------------------


def _git_hosts(task: Any) -> dict[str, str]:
    """The connection's self-hosted git providers (extra ``git_hosts``); none when it cannot be read."""
    try:
        return dict(task.hook.settings.git_hosts)
    except Exception as exc:
        log.debug("No git_hosts for lineage: %s", exc)
        return {}


def _datasets(summary: dict[str, Any], hosts: dict[str, str]) -> list[Any]:
    """The repository as a dataset: the provider's host (a self-hosted one from the connection's
    ``git_hosts``) as namespace, ``owner/repo`` lower-cased as name (git hosts ignore case, so
    ``Acme/App`` and ``acme/app`` are one dataset)."""
    from airflow.providers.common.compat.openlineage.facet import Dataset

    repository = summary.get("repository")
    if not repository:
        return []
    provider = summary.get("git_provider") or "github"
    namespace = hosts.get(provider) or GIT_NAMESPACES.get(provider, f"{provider}://")
    return [Dataset(namespace=namespace, name=repository.strip("/").lower())]


def facets_on_start(task: Any) -> Any:
    """The repository the agent works on, as input and output; no run facet yet (no conversation)."""
    from airflow.providers.openlineage.extractors import OperatorLineage

    summary = conversation_summary(task)
    datasets = _datasets(summary, _git_hosts(task))
    return OperatorLineage(inputs=datasets, outputs=list(datasets))


def facets_on_end(task: Any, task_instance: Any = None) -> Any:
    """On complete and on failure: the repository, and a run facet with the conversation's outcome."""
    from airflow.providers.openlineage.extractors import OperatorLineage

    from airflow_provider_openhands._openlineage import OpenHandsConversationRunFacet

    summary = conversation_summary(task)
    if not summary.get("conversation_id") and task_instance is not None:
        try:  # a task that failed early may only have pushed the id
            summary["conversation_id"] = task_instance.xcom_pull(task_ids=task.task_id, key="conversation_id")
            summary["conversation_url"] = task_instance.xcom_pull(task_ids=task.task_id, key="conversation_url")
        except Exception:
            pass
    run_facets = {}
    if summary.get("conversation_id"):
        run_facets[RUN_FACET_KEY] = OpenHandsConversationRunFacet(
            conversationId=summary["conversation_id"],
            url=summary.get("conversation_url"),
            status=summary.get("status"),
            prNumbers=summary.get("pr_numbers") or [],
            prUrls=summary.get("pr_urls") or [],
            cost=summary.get("cost"),
            model=summary.get("model"),
        )
    datasets = _datasets(summary, _git_hosts(task))
    return OperatorLineage(inputs=datasets, outputs=list(datasets), run_facets=run_facets)
