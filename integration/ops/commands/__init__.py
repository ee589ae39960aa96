"""The commands of ``integration``, one concern per module; ``integration.ops.cli`` lists them."""
