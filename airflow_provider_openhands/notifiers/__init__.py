"""Notifiers: Airflow callbacks that start OpenHands conversations (``on_failure_callback``)."""
