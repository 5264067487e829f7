"""Observability: logs, metrics, traces and the status endpoint."""
