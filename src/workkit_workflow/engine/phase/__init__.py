"""The phase runner: one phase of an execution (the workflow body, or its
compensation) over its journal entries, with one module per operation kind.

``_run`` drives the body and parks it; ``_step`` (with ``_attempt``), ``_sleep``
and ``_wait`` are the operations; ``_operations`` assembles them into
:class:`~._operations.Phase`, the ``Operations`` port the contexts call.
"""
