"""Subcommands of the ``integration`` command that have a module of their own."""
