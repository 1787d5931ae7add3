"""Components used only by tests: they ship with the package so built jobs can reference them."""
