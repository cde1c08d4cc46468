"""Triggers: what starts a pipeline run by itself (new data, a schedule, drift, live quality),
safely under several watchers (claims.py), in a loop that runs on the cluster (actor.py)."""
