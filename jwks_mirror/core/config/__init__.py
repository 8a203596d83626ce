"""The configuration: the model (frozen settings), the value checks (fields) and the loader that
walks a file."""
