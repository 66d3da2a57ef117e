"""The OpenLineage run facet of an OpenHands conversation (imported only when lineage is extracted:
needs the ``openlineage`` extra)."""

from __future__ import annotations

import attr
from openlineage.client.facet_v2 import RunFacet

from airflow_provider_openhands import __version__


@attr.define
class OpenHandsConversationRunFacet(RunFacet):
    """The OpenHands conversation a task ran: id, page URL, status, pull requests, cost and model."""

    conversationId: str
    url: str | None = None
    status: str | None = None
    prNumbers: list[int] = attr.field(factory=list)
    prUrls: list[str] = attr.field(factory=list)
    cost: float | None = None
    model: str | None = None
    providerVersion: str = __version__

    @staticmethod
    def _get_schema() -> str:
        """The run facet's documented base schema (it resolves): a custom facet published nowhere
        else points there, as the spec allows; its fields are described above."""
        return RunFacet._get_schema()
