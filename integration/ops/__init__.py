"""Running the service: CLI, check, dev stack, supervisor, server, Python client."""
