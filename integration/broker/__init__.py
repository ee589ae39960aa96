"""Putting messages into the broker and reading what it holds."""
