"""Offline testing aids: a local OpenHands emulator and a pytest fixture for it.

Use it to test your own DAGs without an OpenHands account::

    from airflow_provider_openhands.testing import Emulator

    with Emulator(conversation_seconds=2) as emu:
        ...  # point an ``openhands`` connection at emu.url with password emu.api_key
"""

from airflow_provider_openhands.testing.emulator import Emulator, Fault

__all__ = ["Emulator", "Fault"]
