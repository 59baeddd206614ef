"""Built-in features (to be filled)."""
