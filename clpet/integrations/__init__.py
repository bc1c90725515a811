"""Bridges to other continual-learning libraries (Avalanche)."""
