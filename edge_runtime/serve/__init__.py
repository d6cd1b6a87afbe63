"""Serving: the transport-free generation service, MQTT and serial transports and their clients."""
