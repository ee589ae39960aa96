"""The checks of ``integration check``: each a function of a context yielding findings."""
