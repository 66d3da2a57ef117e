"""Harnesses only the tests use (``scripts/`` holds what a user runs).

* ``real_openhands.py``: the real open-source OpenHands server on loopback (``RealOpenHands``), for
  the ``real_openhands`` tier; ``python tests/harness/real_openhands.py --install`` makes its venv.
* ``real_openhands_serve.py``: its launcher, run with the Python of that venv.
* ``fake_llm.py``: the scripted LLM the real server talks to.

``scripts/local_airflow.py`` (a throw-away Airflow on this machine) stays in ``scripts/``: the demo
(``scripts/run_demo.py``) a user runs needs it; the tests and the benchmark import it from there.
"""
