"""Stub of the runtime's compatibility-flag module for running the real workers SDK in
Node (set CFW_IMPLICIT_DEPS=0 for the legacy ``step.do`` signature)."""

import cf_engine

python_workflows_implicit_dependencies = bool(cf_engine.flags.implicit)
