"""Built-in writers (to be filled)."""
