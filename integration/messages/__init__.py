"""The vocabulary of the bus: envelopes, statuses, problems, types, routing, retries."""
