"""One poller for all the OpenHands triggers of a triggerer that use the same connection.

Every poll counts against the service's per-user limit (100 requests per minute), and the V1 API
answers up to 99 conversations (or start tasks) in one request. So instead of one request per
trigger per interval, the triggers of one event loop and one connection subscribe here; each
round the poller sends one batched request per 99 due ids and hands each trigger its own answer.
V0 has no batch endpoint: there each id is its own request, over the one shared client.

* Batches are independent: each runs as its own task; a round does not wait for a slow one, and
  an id whose batch is still in flight is not asked for again until it returns.
* The process's request budget for the connection (``hooks/budget.py``: extra
  ``max_requests_per_minute``, default 60) caps what the poller sends, together with everything
  else the triggers of the process send (their events reads, pauses): every request waits for a
  slot, so under load the rounds stretch instead of bursting. Each trigger keeps its own deadline:
  it waits on its own timer, never on the poller. ``coalesce=False`` triggers each have a private
  poller, within the same budget.
* The poller's client does not retry by itself: a batch that met a transient error backs off
  (exponentially, with jitter, honouring ``Retry-After``) and its subscribers get the error each
  failed round, so each trigger decides how long to ride it out. Permanent errors are delivered
  too.
* The connection is read again every :data:`SETTINGS_REFRESH_SECONDS`, and at once after a 401,
  so a rotated key needs no triggerer restart.
* The poller's task runs in a context of its own (Airflow routes a trigger's logs by context
  variables) and logs nothing at INFO or above about individual ids: each trigger logs its own.
"""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
import logging
import random
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

from airflow_provider_openhands.api import endpoints
from airflow_provider_openhands.api.endpoints import MAX_IDS_PER_REQUEST, ApiRequest
from airflow_provider_openhands.api.state import V1, canonical_id
from airflow_provider_openhands.exceptions import OpenHandsAuthError, OpenHandsTransientError
from airflow_provider_openhands.hooks.transport import AsyncTransport, ConnectionSettings, RetryPolicy, adrive

log = logging.getLogger(__name__)

CONVERSATION = "conversation"
START_TASK = "start_task"

#: Seconds between two readings of the connection (a 401 also makes the poller read it at once).
SETTINGS_REFRESH_SECONDS = 300.0
#: Longest ``Retry-After`` honoured, in seconds.
RETRY_AFTER_MAX = 600.0
#: Shortest time between two rounds, whatever interval a trigger asks for.
MIN_ROUND_SECONDS = 0.05


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


@dataclass(eq=False)
class _Item:
    """Polling state of one subscribed id."""

    kind: str
    key: str
    item_id: str
    last_started: float = float("-inf")
    not_before: float = float("-inf")
    failures: int = 0
    in_flight: bool = False


class _Client:
    """A transport for one reading of the connection; closed once replaced and no batch uses it."""

    def __init__(self, settings: ConnectionSettings) -> None:
        self.settings = settings
        # No retries of its own: the poller backs off per batch, within the request budget.
        self.transport = AsyncTransport(settings, RetryPolicy(max_retries=0))
        self.users = 0
        self.retired = False
        self.closed = False

    async def close(self) -> None:
        if not self.closed:
            self.closed = True
            await self.transport.close()


class SharedPoller:
    """Polls OpenHands for every subscribed id of one connection, in batches, within a request budget.

    :param openhands_conn_id: the connection whose API key, version and budget are used.
    :param shared: False for a poller private to one trigger (coalescing turned off).
    """

    _registry: dict[tuple[int, str], SharedPoller] = {}

    #: First backoff after a failed batch, and the longest, in seconds (jittered between half and all).
    backoff_initial = 1.0
    backoff_max = 60.0

    def __init__(self, openhands_conn_id: str, *, shared: bool = True) -> None:
        self.openhands_conn_id = openhands_conn_id
        self.shared = shared
        self.subscriptions: set[Subscription] = set()
        self.batches_polled = 0
        self.requests_sent = 0
        self._task: asyncio.Task[None] | None = None
        self._stopping = False
        self._wake = asyncio.Event()
        self._tick = float("inf")
        self._items: dict[tuple[str, str], _Item] = {}
        self._batches: set[asyncio.Task[None]] = set()
        self._client: _Client | None = None
        self._clients: set[_Client] = set()
        self._settings_read_at = float("-inf")
        self._settings_lock = asyncio.Lock()

    @property
    def budget(self) -> Any:
        """The process's request budget for the connection (None before the connection was read)."""
        return self._client.transport.budget if self._client is not None else None

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
        if self._task is None or self._task.done() or self._stopping:
            self._start()
        elif interval < self._tick:
            # Otherwise a newcomer joins the next round (at most one interval away), so triggers
            # arriving one by one do not each cause an extra round of requests.
            self._wake.set()
        try:
            yield subscription
        finally:
            self.subscriptions.discard(subscription)

    def _start(self) -> None:
        loop = asyncio.get_running_loop()
        if self.shared:  # back in the registry if a finishing run had just left it
            self._registry.setdefault((id(loop), self.openhands_conn_id), self)
        self._stopping = False
        # A context of its own: Airflow routes log lines by context variables, and the poller works
        # for every trigger, not for the one whose subscription happened to start it.
        self._task = contextvars.Context().run(
            loop.create_task, self._run(), name=f"openhands-poller-{self.openhands_conn_id}"
        )

    def _deregister(self) -> None:
        key = (id(asyncio.get_running_loop()), self.openhands_conn_id)
        if self.shared and self._registry.get(key) is self:
            del self._registry[key]

    # -- the rounds --------------------------------------------------------------------------------

    async def _run(self) -> None:
        loop = asyncio.get_running_loop()
        try:
            while self.subscriptions:
                started = loop.time()
                try:
                    await self._round(started)
                except Exception as exc:  # e.g. the connection cannot be read: every waiter must hear it
                    for subscription in list(self.subscriptions):
                        subscription.deliver(exc)
                if not self.subscriptions:
                    break
                self._tick = max(MIN_ROUND_SECONDS, min(s.interval for s in self.subscriptions))
                self._wake.clear()
                with contextlib.suppress(asyncio.TimeoutError):
                    await asyncio.wait_for(self._wake.wait(), max(0.0, started + self._tick - loop.time()))
        finally:
            # No await between the last check for subscribers and leaving the registry: a trigger
            # that subscribes after this point gets a fresh run (and its own client).
            self._stopping = True
            self._deregister()
            batches, clients = self._batches, self._clients | ({self._client} if self._client else set())
            self._batches, self._clients, self._client, self._items = set(), set(), None, {}
            self._settings_read_at = float("-inf")
            for batch in batches:
                batch.cancel()
            await asyncio.gather(*batches, return_exceptions=True)
            for client in clients:
                await client.close()

    async def _round(self, now: float) -> None:
        if self._client is None or now - self._settings_read_at >= SETTINGS_REFRESH_SECONDS:
            await self._read_settings(initial=self._client is None)
        client = self._client
        assert client is not None
        intervals: dict[tuple[str, str], float] = {}
        for subscription in self.subscriptions:
            key = (subscription.kind, subscription.key)
            intervals[key] = min(subscription.interval, intervals.get(key, subscription.interval))
            if key not in self._items:
                self._items[key] = _Item(subscription.kind, subscription.key, subscription.item_id)
        for key in [k for k, item in self._items.items() if k not in intervals and not item.in_flight]:
            del self._items[key]  # nobody waits on it any more
        tick = max(MIN_ROUND_SECONDS, min(intervals.values(), default=0.0))
        due: dict[str, list[_Item]] = {CONVERSATION: [], START_TASK: []}
        for key, interval in intervals.items():
            item = self._items[key]
            # Half a round of slack, so an id polled every round is not skipped for a round jittering.
            if not item.in_flight and now >= max(item.last_started + interval - tick / 2, item.not_before):
                due[item.kind].append(item)
        size = MAX_IDS_PER_REQUEST if client.settings.api_version == V1 else 1
        # One batch a round of the shared poller goes ahead of the waits' own reads; the rest queue with
        # them (a private poller serves one wait: it queues too, or a hundred of them would starve the reads).
        first = self.shared
        for kind, items in due.items():
            items.sort(key=lambda item: item.key)
            for start in range(0, len(items), size):
                self._launch(client, kind, items[start : start + size], now, first)
                first = False

    def _launch(self, client: _Client, kind: str, items: list[_Item], now: float, first: bool) -> None:
        for item in items:
            item.in_flight = True
            item.last_started = now
        self.batches_polled += 1
        client.users += 1
        task = asyncio.get_running_loop().create_task(self._poll_batch(client, kind, items, first))
        self._batches.add(task)
        task.add_done_callback(self._batches.discard)

    async def _poll_batch(self, client: _Client, kind: str, items: list[_Item], first: bool) -> None:
        try:
            try:
                answers = await self._fetch(client, kind, items, first)
            except OpenHandsAuthError as exc:
                if exc.status_code != 401:
                    raise
                fresh = await self._after_unauthorized(client)
                if fresh is None:  # the connection still holds the refused key
                    raise
                await self._release(client)
                client = fresh
                client.users += 1
                answers = await self._fetch(client, kind, items, first)  # once, at once (within the budget)
        except Exception as exc:
            error = exc
            self._failed(items, error)
            self._deliver(kind, items, lambda _key: error)
        else:
            for item in items:
                item.failures = 0
                item.not_before = float("-inf")
            self._deliver(kind, items, answers.get)
        finally:
            for item in items:
                item.in_flight = False
            await self._release(client)

    async def _fetch(self, client: _Client, kind: str, items: list[_Item], first: bool) -> dict[str, Any]:
        """``first``: the round's first batch, which takes the next slot of the budget (polling never stops
        behind the waits' own reads); the others queue with those, so neither starves the other."""
        await client.transport.budget.aacquire(client.settings.conn_id, first=first)
        # Ask only for the ids somebody still waits on once the slot has come: a trigger may
        # have left while the batch waited for it.
        waited_on = {(s.kind, s.key) for s in self.subscriptions}
        ids = [item.item_id for item in items if (kind, item.key) in waited_on]
        if not ids:
            return {}
        settings = client.settings
        slot_taken = True
        if kind == CONVERSATION:
            flow = endpoints.conversations(settings.api_version, ids, settings.base_url)
        else:
            flow = endpoints.start_tasks(ids)

        async def send(request: ApiRequest) -> Any:
            nonlocal slot_taken
            self.requests_sent += 1
            if slot_taken:
                slot_taken = False
                return await client.transport.send_in_slot(request)
            await client.transport.budget.aacquire(settings.conn_id, first=first)
            return await client.transport.send_in_slot(request)  # the client never retries

        return await adrive(flow, send)

    def _deliver(self, kind: str, items: list[_Item], answer_for: Any) -> None:
        keys = {item.key for item in items}
        for subscription in list(self.subscriptions):
            if subscription.kind == kind and subscription.key in keys:
                subscription.deliver(answer_for(subscription.key))

    def _failed(self, items: list[_Item], exc: Exception) -> None:
        """Back off this batch's ids: exponentially with jitter, and at least ``Retry-After``."""
        loop = asyncio.get_running_loop()
        retry_after = getattr(exc, "retry_after", None) if isinstance(exc, OpenHandsTransientError) else None
        if retry_after is not None:  # a 429 has held the whole budget already (the transport)
            retry_after = min(float(retry_after), RETRY_AFTER_MAX)
        for item in items:
            item.failures += 1
            delay = min(self.backoff_max, self.backoff_initial * 2 ** (item.failures - 1))
            delay = delay / 2 + random.uniform(0, delay / 2)
            if retry_after is not None:
                delay = max(delay, retry_after)
            item.not_before = loop.time() + delay
        log.debug("A batch of %d failed (%s); backing off", len(items), type(exc).__name__)

    # -- the connection ----------------------------------------------------------------------------

    async def _read_settings(self, *, initial: bool = False, replacing: _Client | None = None) -> None:
        """Read the connection again; a new client if anything in it changed.

        With ``replacing``, only if that client is still the current one (else someone else has
        just read the connection).
        """
        from airflow_provider_openhands.hooks.openhands import OpenHandsHook

        async with self._settings_lock:
            if replacing is not None and self._client is not replacing:
                return
            loop = asyncio.get_running_loop()
            try:
                settings = await OpenHandsHook(self.openhands_conn_id).asettings()
            except Exception as exc:
                if initial or self._client is None:
                    raise
                self._settings_read_at = loop.time()  # keep the settings that worked; try later
                log.warning("Could not read connection %r again: %s", self.openhands_conn_id, exc)
                return
            self._settings_read_at = loop.time()
            if self._client is not None and self._client.settings == settings:
                return
            old, self._client = self._client, _Client(settings)
            self._clients.add(self._client)
            if old is not None:
                log.info("Connection %r changed: polling with its new settings", self.openhands_conn_id)
                old.retired = True
                if old.users == 0:
                    self._clients.discard(old)
                    await old.close()

    async def _after_unauthorized(self, client: _Client) -> _Client | None:
        """After a 401: the client to retry with if the connection changed since, else None."""
        await self._read_settings(replacing=client)
        return self._client if self._client is not client and self._client is not None else None

    async def _release(self, client: _Client) -> None:
        client.users -= 1
        if client.retired and client.users == 0:
            self._clients.discard(client)
            await client.close()
