"""Public functions: validate, pick the adapter, run the core's (forward, backward) pair."""
