"""The MLflow model registry and the champion record."""
