"""The MQTT device collector: JSON from devices on a local broker (edge.mqtt.config)."""
