"""Bookworld (to be filled)."""
