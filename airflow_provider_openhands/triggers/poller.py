"""One poller for all the OpenHands triggers of a triggerer that use the same connection.

Every poll counts against the service's per-user limit (100 requests per minute), and the V1 API
answers up to 99 conversations (or start tasks) in one request. So instead of one request per
trigger per interval, the triggers of one event loop and one connection subscribe here; each
interval the poller sends one batched request per 99 ids and hands each trigger its own answer.
V0 has no batch endpoint: there each id is its own request, over the one shared client.

A batch that fails or is slow delays only its own subscribers: batches run as separate tasks, and
each trigger waits on its own deadline, not on the poller.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from typing import Any

from airflow_provider_openhands.api.endpoints import MAX_IDS_PER_REQUEST
from airflow_provider_openhands.api.state import V1, canonical_id

CONVERSATION = "conversation"
START_TASK = "start_task"


class Subscription:
    """What one trigger waits on: the newest answer for its id (a dict, None if unknown, or an error)."""

    def __init__(self, kind: str, item_id: str, interval: float):
        self.kind = kind
        self.item_id = item_id
        self.key = canonical_id(item_id)
        self.interval = interval
        self._latest: asyncio.Queue[Any] = asyncio.Queue(maxsize=1)

    def deliver(self, value: Any) -> None:
        """Keep only the newest answer: a trigger that lags needs the present, not the backlog."""
        if self._latest.full():
            self._latest.get_nowait()
        self._latest.put_nowait(value)

    async def next(self) -> Any:
        value = await self._latest.get()
        if isinstance(value, BaseException):
            raise value
        return value


class SharedPoller:
    """Polls OpenHands for every subscribed id of one connection, in batches, once per interval.

    :param openhands_conn_id: the connection whose API key and version are used.
    :param shared: False for a poller private to one trigger (coalescing turned off).
    """

    _registry: dict[tuple[int, str], SharedPoller] = {}

    def __init__(self, openhands_conn_id: str, *, shared: bool = True) -> None:
        from airflow_provider_openhands.hooks.openhands import OpenHandsHook

        self.openhands_conn_id = openhands_conn_id
        self.shared = shared
        self.hook = OpenHandsHook(openhands_conn_id)
        self.subscriptions: set[Subscription] = set()
        self.batches_polled = 0
        self._task: asyncio.Task[None] | None = None

    @classmethod
    def for_connection(cls, openhands_conn_id: str, *, shared: bool = True) -> SharedPoller:
        """The poller of this event loop for this connection (a new private one if not shared)."""
        if not shared:
            return cls(openhands_conn_id, shared=False)
        key = (id(asyncio.get_running_loop()), openhands_conn_id)
        poller = cls._registry.get(key)
        if poller is None:
            poller = cls._registry[key] = cls(openhands_conn_id)
        return poller

    @contextlib.asynccontextmanager
    async def subscribe(self, kind: str, item_id: str, interval: float) -> AsyncIterator[Subscription]:
        """Join the batch for ``item_id`` while the ``async with`` block runs; leave at once after."""
        subscription = Subscription(kind, item_id, interval)
        self.subscriptions.add(subscription)
        # A newcomer joins the next round (at most one interval away), so triggers arriving one
        # by one do not each cause an extra round of requests.
        if self._task is None or self._task.done():
            self._task = asyncio.create_task(self._run(), name=f"openhands-poller-{self.openhands_conn_id}")
        try:
            yield subscription
        finally:
            self.subscriptions.discard(subscription)

    def _deregister(self) -> None:
        key = (id(asyncio.get_running_loop()), self.openhands_conn_id)
        if self.shared and self._registry.get(key) is self:
            del self._registry[key]

    async def _run(self) -> None:
        loop = asyncio.get_running_loop()
        try:
            while self.subscriptions:
                started = loop.time()
                try:
                    await self._poll_once()
                except Exception as exc:  # e.g. the connection cannot be read: every waiter must hear it
                    for subscription in list(self.subscriptions):
                        subscription.deliver(exc)
                if not self.subscriptions:
                    break
                interval = min(s.interval for s in self.subscriptions)
                await asyncio.sleep(max(0.0, interval - (loop.time() - started)))
        finally:
            # No await between the last check for subscribers and leaving the registry: a trigger
            # that subscribes after this point gets a fresh poller.
            self._deregister()
            await self.hook.aclose()

    async def _poll_once(self) -> None:
        settings = await self.hook.asettings()
        size = MAX_IDS_PER_REQUEST if settings.api_version == V1 else 1
        batches = []
        for kind in (CONVERSATION, START_TASK):
            ids = sorted({s.item_id for s in self.subscriptions if s.kind == kind}, key=canonical_id)
            batches += [(kind, ids[start : start + size]) for start in range(0, len(ids), size)]
        await asyncio.gather(*(self._poll_batch(kind, ids) for kind, ids in batches))

    async def _poll_batch(self, kind: str, ids: list[str]) -> None:
        self.batches_polled += 1
        try:
            if kind == CONVERSATION:
                answers = await self.hook.aget_conversations(ids)
            else:
                answers = await self.hook.aget_start_tasks(ids)
        except Exception as exc:
            answers = None
            error: Exception | None = exc
        else:
            error = None
        wanted = {canonical_id(i) for i in ids}
        for subscription in list(self.subscriptions):
            if subscription.kind == kind and subscription.key in wanted:
                subscription.deliver(error if error is not None else answers.get(subscription.key))
