"""Built-in sources (to be filled)."""
