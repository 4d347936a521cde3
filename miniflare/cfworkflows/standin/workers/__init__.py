"""A stand-in for the ``workers`` module of workers-runtime-sdk, for tests under Pyodide.

Written for this harness (not the SDK's code): it reproduces the behaviour the
workkit adapter depends on, as documented in docs/research/platform-notes.md
(SDK 1.9.5): ``WorkflowEntrypoint.__init_subclass__`` wraps ``run`` so ``event``
arrives as a dict and ``step`` as a wrapper whose ``do(name, *, concurrent,
config)`` is a decorator (the function may take a ``ctx`` parameter), results
cross as JS values, tuples are refused, and a JS error named
``NonRetryableError`` comes back as ``workers.workflows.NonRetryableError``.

``SDK.native_non_retryable`` switches the 1.9.0 behaviour (the JS shim that makes
a raised NonRetryableError non-retryable) on or off, to test both.
"""

from .entrypoints import SDK, WorkflowEntrypoint

__all__ = ["SDK", "WorkflowEntrypoint"]
