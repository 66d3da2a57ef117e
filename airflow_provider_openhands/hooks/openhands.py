"""``OpenHandsHook``: the API key from an Airflow connection, and the API's operations."""

from __future__ import annotations

import contextlib
import json
import os
import time
from collections.abc import Iterator, Mapping, Sequence
from functools import cached_property
from typing import Any

from airflow.providers.common.compat.sdk import BaseHook

from airflow_provider_openhands.api import endpoints
from airflow_provider_openhands.api.options import StartOptions, check_message, check_positive
from airflow_provider_openhands.api.state import (
    V0,
    conversation_page_url,
)
from airflow_provider_openhands.connection_form import form_extra
from airflow_provider_openhands.exceptions import (
    OpenHandsApiError,
    OpenHandsConfigError,
    OpenHandsError,
    OpenHandsNotFoundError,
    OpenHandsTransientError,
)
from airflow_provider_openhands.hooks.transport import (
    AsyncTransport,
    ConnectionSettings,
    RetryPolicy,
    SyncTransport,
)

#: ``test_connection`` answers a person: one quick retry, not the tasks' patient backoff.
TEST_CONNECTION_RETRIES = RetryPolicy(max_retries=1, initial_wait=0.5, max_wait=2.0)

_UNREACHABLE = (
    ("connection refused", "connection refused"),
    ("name or service not known", "host name not found"),
    ("nodename nor servname", "host name not found"),
    ("temporary failure in name resolution", "host name not found"),
    ("nameresolutionerror", "host name not found"),
    ("getaddrinfo failed", "host name not found"),
    ("certificate verify failed", "its TLS certificate is not trusted (extra disable_tls_verification: true skips it)"),
    ("sslerror", "TLS handshake failed"),
    ("connecttimeout", "no answer (connect timeout)"),
    ("readtimeout", "no answer within the connection's timeout"),
    ("timed out", "no answer (timed out)"),
    ("network is unreachable", "network is unreachable"),
    ("no route to host", "no route to host"),
    ("connection reset", "connection reset"),
)


def _test_failure(exc: Exception, settings: ConnectionSettings | None) -> str:
    """What ``test_connection`` says about an error: a network failure as "cannot reach <url>: <why>"
    (not the HTTP library's text), a 404 with a hint at the base URL and API version."""
    text = str(exc)
    if settings is not None and isinstance(exc, OpenHandsTransientError) and exc.status_code is None:
        lowered = text.lower()
        why = next((reason for marker, reason in _UNREACHABLE if marker in lowered), "connection failed")
        return f"cannot reach {settings.base_url}: {why}"
    if settings is not None and isinstance(exc, OpenHandsNotFoundError):
        return (
            f"{text}: is {settings.base_url} an OpenHands server, and does it speak the connection's API "
            f"version ({settings.api_version}; extra api_version: v1 or v0)?"
        )
    return text


def _is_ui_test_copy(conn_id: str) -> bool:
    """Airflow's Test button (UI and REST API) tests a copy of the form under a random 8-character id,
    given as an ``AIRFLOW_CONN_`` variable; real ids are rarely mixed case."""
    return (
        len(conn_id) == 8
        and conn_id.isalnum()
        and conn_id != conn_id.lower()
        and f"AIRFLOW_CONN_{conn_id.upper()}" in os.environ
    )


def _extra_of(conn: Any) -> dict[str, Any]:
    """The connection's extra as a dict. Not ``extra_dejson``: it asks Airflow to mask every value of
    the extra, and none of the provider's is a secret (``api_version`` "v1" is too short to mask:
    "Skipping masking for a secret as it's too short"). Airflow masks the extra itself when it reads
    the connection (the whole text, and values under secret-looking names); the hook masks the API key."""
    raw = conn.extra
    try:
        extra = raw if isinstance(raw, Mapping) else json.loads(raw or "{}")
    except ValueError:
        extra = None
    if not isinstance(extra, Mapping):
        raise OpenHandsConfigError(f"Connection {conn.conn_id!r}: its extra is not a JSON object")
    return dict(extra)


class OpenHandsHook(BaseHook):
    """Talks to OpenHands Cloud (V1) or a legacy self-hosted server (V0).

    The connection's password is the API key; ``host`` the base URL (default
    ``https://app.all-hands.dev``); extra ``api_version`` (``v1`` or ``v0``), ``timeout`` (s),
    ``max_retries``, ``allow_insecure_http``, ``disable_tls_verification``.

    :param openhands_conn_id: the Airflow connection to use.
    :param retry_policy: how transient failures (429, 5xx, connection errors) are retried.
    """

    conn_name_attr = "openhands_conn_id"
    default_conn_name = "openhands_default"
    conn_type = "openhands"
    hook_name = "OpenHands"

    def __init__(self, openhands_conn_id: str = default_conn_name, *, retry_policy: RetryPolicy | None = None) -> None:
        super().__init__()
        self.openhands_conn_id = openhands_conn_id
        self._retry_policy = retry_policy
        self._async_transport: AsyncTransport | None = None

    @classmethod
    def get_ui_field_behaviour(cls) -> dict[str, Any]:
        """Standard fields of the form (Airflow 2; Airflow 3 reads the same from the provider info)."""
        from airflow_provider_openhands.connection_form import ui_field_behaviour

        return ui_field_behaviour()

    @classmethod
    def get_connection_form_widgets(cls) -> dict[str, Any]:
        """The extra's options as form fields (Airflow 2; Airflow 3 reads ``conn-fields`` from the
        provider info). Imports Flask-AppBuilder and wtforms only when called, by the webserver."""
        from airflow_provider_openhands.connection_form import wtforms_widgets

        return wtforms_widgets()

    # -- connection ----------------------------------------------------------------------------

    def _settings_from(self, conn: Any, extra: Mapping[str, Any]) -> ConnectionSettings:
        settings = ConnectionSettings.from_connection(
            self.openhands_conn_id, conn.host, conn.port, conn.password, form_extra(extra)
        )
        from airflow.providers.common.compat.sdk import mask_secret

        mask_secret(settings.api_key)
        return settings

    @cached_property
    def settings(self) -> ConnectionSettings:
        conn = self.get_connection(self.openhands_conn_id)
        return self._settings_from(conn, _extra_of(conn))

    async def asettings(self) -> ConnectionSettings:
        """Read the connection without blocking the triggerer's event loop."""
        if "settings" not in self.__dict__:
            from airflow.providers.common.compat.connection import get_async_connection

            conn = await get_async_connection(self.openhands_conn_id, hook=self)
            self.__dict__["settings"] = self._settings_from(conn, _extra_of(conn))
        return self.settings

    @property
    def api_version(self) -> str:
        return self.settings.api_version

    @property
    def base_url(self) -> str:
        return self.settings.base_url

    def _retry(self, settings: ConnectionSettings) -> RetryPolicy:
        return self._retry_policy or RetryPolicy(max_retries=settings.max_retries)

    @cached_property
    def _sync(self) -> SyncTransport:
        return SyncTransport(self.settings, self._retry(self.settings))

    async def _async(self) -> AsyncTransport:
        if self._async_transport is None:
            settings = await self.asettings()
            self._async_transport = AsyncTransport(settings, self._retry(settings))
        return self._async_transport

    @contextlib.contextmanager
    def deadline(self, at: float | None) -> Iterator[None]:
        """Every request this hook sends in the block (worker side), retries and ``Retry-After`` waits
        included, ends by ``at`` (``time.time()``): a caller's own deadline is never outlived."""
        transport = self._sync
        previous, transport.deadline = transport.deadline, at
        try:
            yield
        finally:
            transport.deadline = previous

    def conversation_url(self, conversation_id: str) -> str:
        return conversation_page_url(self.base_url, conversation_id)

    # -- sync API (workers) ----------------------------------------------------------------------

    def submit_conversation(self, options: StartOptions) -> dict[str, Any]:
        """Send the start request once. Returns ``{"conversation_id", "start_task"}``.

        On V1 ``conversation_id`` is None until the start task is READY: wait with
        :meth:`wait_for_start_task` or defer to the trigger.
        """
        return self._sync.run(endpoints.start(self.api_version, options.checked(self.api_version)))

    def get_start_task(self, task_id: str) -> dict[str, Any]:
        return self._sync.run(endpoints.start_task(task_id))

    def wait_for_start_task(self, task_id: str, *, poll_interval: float = 2.0, timeout: float = 900.0) -> str:
        """Block until the V1 start task is READY; return the conversation id."""
        check_positive(poll_interval, "poll_interval")
        check_positive(timeout, "timeout")
        deadline = time.time() + timeout
        last_status = None
        while True:
            task = self.get_start_task(task_id)
            if task["status"] != last_status:
                self.log.info("Start task %s: %s", task_id, task["status"])
                last_status = task["status"]
            conversation_id = endpoints.started_conversation_id(task)
            if conversation_id:
                return conversation_id
            if time.time() >= deadline:
                raise OpenHandsError(f"Start task {task_id} was not READY after {timeout:.0f}s (last: {last_status})")
            time.sleep(min(poll_interval, max(0.0, deadline - time.time())))

    def start_conversation(
        self,
        initial_user_msg: str,
        repository: str | None = None,
        *,
        selected_branch: str | None = None,
        git_provider: str | None = None,
        title: str | None = None,
        conversation_id: str | None = None,
        extra_body: Mapping[str, Any] | None = None,
        poll_interval: float = 2.0,
        start_timeout: float = 900.0,
    ) -> str:
        """Start a conversation and return its id (on V1, once its start task is READY)."""
        options = StartOptions(
            initial_user_msg=initial_user_msg,
            repository=repository,
            selected_branch=selected_branch,
            git_provider=git_provider,
            title=title,
            conversation_id=conversation_id,
            extra_body=dict(extra_body or {}),
        )
        started = self.submit_conversation(options)
        if started["conversation_id"]:
            return started["conversation_id"]
        return self.wait_for_start_task(started["start_task"]["id"], poll_interval=poll_interval, timeout=start_timeout)

    def get_conversation(self, conversation_id: str) -> dict[str, Any]:
        """The normalised state (see :mod:`airflow_provider_openhands.api.state`)."""
        return self._sync.run(endpoints.conversation(self.api_version, conversation_id, self.base_url))

    def get_conversations(self, conversation_ids: Sequence[str]) -> dict[str, dict[str, Any] | None]:
        """Normalised states keyed by canonical id (V1: up to 99 per request)."""
        return self._sync.run(endpoints.conversations(self.api_version, conversation_ids, self.base_url))

    def stop_conversation(self, conversation_id: str, sandbox_id: str | None = None) -> bool:
        """Stop (V0) or pause the sandbox of (V1) a conversation. False if it no longer exists."""
        return self._sync.run(endpoints.stop(self.api_version, conversation_id, sandbox_id))

    def find_start_tasks(self, conversation_ids: Sequence[str], since: str) -> list[dict[str, Any]]:
        """V1 start tasks created since ``since`` (ISO time) that asked for one of ``conversation_ids``,
        newest first (none on V0)."""
        if self.api_version == V0 or not conversation_ids:
            return []
        return self._sync.run(endpoints.recent_start_tasks(since, conversation_ids))

    def get_ended_status(self, conversation_id: str) -> str | None:
        """V1: how the newest turn ended according to the events (``finished``, ``error``, ...), or None."""
        if self.api_version == V0:
            return None
        return self._sync.run(endpoints.ended_status(conversation_id))

    def get_turn_outcome(self, conversation_id: str, own: tuple[str, float, float] | None = None) -> dict[str, Any]:
        """V1: ``{"status", "live", "final_message", "error", "ambiguous"}`` of the newest turn (with
        ``own``: of the turn after that message), from its newest events (one page, more when state
        updates crowd it; empty on V0)."""
        if self.api_version == V0:
            return {"status": None, "live": False, "final_message": None, "error": None}
        return self._sync.run(endpoints.turn_outcome(conversation_id, own))

    def get_pending_actions(self, conversation_id: str) -> list[dict[str, Any]]:
        """V1: the agent's actions waiting for confirmation, oldest first (``id``, ``tool``,
        ``summary``, ``security_risk``)."""
        return self._sync.run(endpoints.pending_actions(conversation_id))

    def respond_to_confirmation(self, conversation_id: str, accept: bool, reason: str = "") -> bool:
        """V1: accept or reject the actions the conversation waits to have confirmed (on its agent
        server); after a rejection the agent goes on with the reason."""
        return self._sync.run(endpoints.respond_to_confirmation(conversation_id, accept, reason))

    def run_agent_on(self, conversation_id: str) -> bool:
        """V1: run the conversation's agent on if it is idle (after a rejection whose ``/run`` was lost);
        False if it was not idle (nothing sent)."""
        return self._sync.run(endpoints.run_on(conversation_id))

    def find_user_message(self, conversation_id: str, text: str, since: str | None) -> str | None:
        """V1: when a user message with exactly ``text`` was sent since ``since`` (ISO), or None."""
        return self._sync.run(endpoints.user_message_sent(conversation_id, text, since))

    def reread_connection(self) -> None:
        """Forget the connection read so far (a rotated API key): the next request reads it again."""
        transport = self.__dict__.pop("_sync", None)
        if transport is not None:
            transport.close()
        self.__dict__.pop("settings", None)

    def get_events(self, conversation_id: str, limit: int = 50, kind: str | None = None) -> list[dict[str, Any]]:
        """V1: the newest events of a conversation (of one ``kind``), newest first (none on V0)."""
        if self.api_version == V0:
            return []
        return self._sync.run(endpoints.newest_events(conversation_id, limit, kind))

    def get_git_changes(self, conversation_id: str, path: str) -> list[dict[str, str]]:
        """V1: ``[{path, status}]`` of the files the agent changed under ``path`` (sandbox running)."""
        return self._sync.run(endpoints.git_changes(conversation_id, path))

    def get_git_diff(self, conversation_id: str, path: str) -> dict[str, str]:
        """V1: ``{original, modified}`` of one changed file (sandbox running)."""
        return self._sync.run(endpoints.git_diff(conversation_id, path))

    def read_file(self, conversation_id: str, file_path: str) -> str | None:
        """V1: a workspace file's text, None if the agent did not write it (sandbox running)."""
        return self._sync.run(endpoints.read_file(conversation_id, file_path))

    def download_trajectory(self, conversation_id: str) -> bytes:
        """V1: the conversation's trajectory, a zip of its events and metadata (for audit)."""
        if self.api_version == V0:
            raise OpenHandsConfigError("trajectory downloads need the V1 API (this connection uses V0)")
        return self._sync.run(endpoints.download_trajectory(conversation_id))

    def stop_start_task(self, task_id: str) -> bool:
        """Pause the sandbox a V1 start task has made so far. False if it has none (yet)."""
        return self._sync.run(endpoints.stop_start_task(task_id))

    def resume_conversation(self, sandbox_id: str) -> bool:
        """Resume a paused V1 sandbox. False if it is gone, or on V0."""
        return self._sync.run(endpoints.resume(self.api_version, sandbox_id))

    def send_message(self, conversation_id: str, text: str, *, run: bool = True) -> dict[str, Any]:
        """V1: send a follow-up message; with ``run`` the agent works on it in a new turn (its end
        shows in :meth:`get_turn_outcome`). The sandbox must be running: resume a paused one first."""
        if self.api_version == V0:
            raise OpenHandsConfigError("follow-up messages need the V1 API (this connection uses V0)")
        return self._sync.run(endpoints.send_message(conversation_id, check_message(text, "message"), run=run))

    def test_connection(self) -> tuple[bool, str]:
        """One cheap authenticated call, retried once at most (a person waits for the answer); the
        message says what is wrong. Airflow's UI tests a copy of the connection under a random id:
        the message then says "this connection" instead of naming that id."""
        transport = None
        try:
            settings = self.settings
            transport = self._sync if self._retry_policy else SyncTransport(settings, TEST_CONNECTION_RETRIES)
            transport.run(endpoints.check_auth(settings.api_version))
        except (OpenHandsApiError, OpenHandsConfigError) as exc:
            return False, self._as_the_user_knows_it(_test_failure(exc, self.settings if transport else None))
        finally:
            if transport is not None and transport is not self.__dict__.get("_sync"):
                transport.close()
        version = "V0 (legacy)" if settings.api_version == V0 else "V1"
        named = "" if _is_ui_test_copy(self.openhands_conn_id) else f" (connection {self.openhands_conn_id!r})"
        return True, f"Connected to {settings.base_url} with the {version} API{named}."

    def _as_the_user_knows_it(self, message: str) -> str:
        if not _is_ui_test_copy(self.openhands_conn_id):
            return message
        quoted = repr(self.openhands_conn_id)
        return message.replace(f"Connection {quoted}", "This connection").replace(
            f"connection {quoted}", "this connection"
        )

    # -- async API (triggerer) -------------------------------------------------------------------

    async def aget_start_tasks(self, task_ids: Sequence[str]) -> dict[str, dict[str, Any] | None]:
        return await (await self._async()).run(endpoints.start_tasks(task_ids))

    async def aget_start_task(self, task_id: str) -> dict[str, Any]:
        return await (await self._async()).run(endpoints.start_task(task_id))

    async def aget_conversations(self, conversation_ids: Sequence[str]) -> dict[str, dict[str, Any] | None]:
        transport = await self._async()
        settings = transport.settings
        return await transport.run(endpoints.conversations(settings.api_version, conversation_ids, settings.base_url))

    async def aget_conversation(self, conversation_id: str) -> dict[str, Any]:
        transport = await self._async()
        settings = transport.settings
        return await transport.run(endpoints.conversation(settings.api_version, conversation_id, settings.base_url))

    async def astop_conversation(self, conversation_id: str, sandbox_id: str | None = None) -> bool:
        transport = await self._async()
        return await transport.run(endpoints.stop(transport.settings.api_version, conversation_id, sandbox_id))

    async def aget_ended_status(self, conversation_id: str) -> str | None:
        transport = await self._async()
        if transport.settings.api_version == V0:
            return None
        return await transport.run(endpoints.ended_status(conversation_id))

    async def aget_turn_outcome(
        self, conversation_id: str, own: tuple[str, float, float] | None = None
    ) -> dict[str, Any]:
        transport = await self._async()
        if transport.settings.api_version == V0:
            return {"status": None, "live": False, "final_message": None, "error": None}
        return await transport.run(endpoints.turn_outcome(conversation_id, own))

    async def astop_start_task(self, task_id: str) -> bool:
        return await (await self._async()).run(endpoints.stop_start_task(task_id))

    async def areread_connection(self) -> None:
        """Forget the connection read so far (a rotated API key): the next request reads it again."""
        await self.aclose()
        self.__dict__.pop("settings", None)

    async def aclose(self) -> None:
        if self._async_transport is not None:
            await self._async_transport.close()
            self._async_transport = None
