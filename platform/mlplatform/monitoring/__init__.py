"""Monitoring: alerts, metrics, live drift, quality and anomalies over what the platform records."""
