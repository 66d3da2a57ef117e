"""Example DAGs, shipped with the package: each file's docstring says what it shows. Point a DAG
folder (or a DAG bundle) at this directory to run them, e.g. against ``openhands-emulator``."""
