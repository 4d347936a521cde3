"""The client a Worker (or a local program) starts and inspects executions with.

:func:`workkit_workflow.create_durable_workflow` is the entry point; backends
register the binding kinds they serve here.
"""
