"""Command groups of the ``integration`` command, one module per group."""
