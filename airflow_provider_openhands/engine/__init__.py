"""The lifecycle engine: pure decisions (:mod:`.engine`), the state they read (:mod:`.state`) and the
actions and observations they speak (:mod:`.actions`). No I/O and no Airflow here: drivers in
``hooks/driver.py`` (worker, managed agent), ``triggers/`` (triggerer) and the sensor carry them out."""
