"""Built-in worlds (to be filled)."""
