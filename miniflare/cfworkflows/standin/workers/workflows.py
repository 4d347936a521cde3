class NonRetryableError(Exception):
    """Raised in a step: the engine does not retry it (with the 1.9.0 shim)."""
