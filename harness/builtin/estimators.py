"""Built-in estimators (to be filled)."""
