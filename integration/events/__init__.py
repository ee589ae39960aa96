"""Result events and their deliveries to consumers and webhooks."""
