"""The blob store port and adapters, and the names of queues and containers."""
