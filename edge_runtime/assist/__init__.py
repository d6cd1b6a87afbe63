"""The assistant: a home registry from Home Assistant MQTT discovery, request interpretation and action calls."""
