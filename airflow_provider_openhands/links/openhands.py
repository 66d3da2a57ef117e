"""The "OpenHands Conversation" button on a task: opens the conversation's page."""

from __future__ import annotations

from typing import Any

from airflow.providers.common.compat.sdk import BaseOperatorLink, XCom

CONVERSATION_URL_KEY = "conversation_url"
CONVERSATION_ID_KEY = "conversation_id"


class OpenHandsConversationLink(BaseOperatorLink):
    """Reads the ``conversation_url`` XCom the task pushed as soon as the conversation existed."""

    name = "OpenHands Conversation"

    def get_link(self, operator: Any, *, ti_key: Any) -> str:
        return XCom.get_value(key=CONVERSATION_URL_KEY, ti_key=ti_key) or ""
