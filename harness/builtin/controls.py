"""Built-in controls (to be filled)."""
