"""The Cloudflare Workflows backend: the same definitions on Cloudflare's native engine.

Importing it registers the backend: its exporter (``Workflow.as_cloudflare_workflow``)
and its binding kind (``create_durable_workflow`` on a Workflows binding).
"""
