"""Adapters of the provider to other Airflow providers' contracts, above every other layer: they
drive the lifecycle engine (``engine/``) with the hooks (``hooks/``), and nothing below imports them.

* :mod:`.managed_agent`: OpenHands as a common.ai managed agent (the ``common-ai`` extra).
"""
