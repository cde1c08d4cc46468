"""Serving control plane: deployment plans, infra validation, the deploy step, the client."""
