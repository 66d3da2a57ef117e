"""Apache Airflow provider for OpenHands: run coding-agent conversations as pipeline steps."""

__version__ = "0.1.0"
