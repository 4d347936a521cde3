"""The engine: one durable execution over small ports.

It depends only on :mod:`workkit_workflow.definitions` and on the ports in
``_ports`` (storage, clock, host); runtimes and backends depend on it, never
the reverse. Optional features plug in through ``_plugins`` without the engine
naming them.
"""
