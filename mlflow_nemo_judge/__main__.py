"""``python -m mlflow_nemo_judge`` runs the CLI."""

from mlflow_nemo_judge.cli import entry

entry()
