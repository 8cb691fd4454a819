"""Webhooks: the events topic delivered to each tenant's subscribed URLs, signed and retried."""
