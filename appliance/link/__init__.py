"""The optional MQTT link (`[mqtt]`): the appliance on a message bus, for Home Assistant,
robots and fleets. Off by default; when off, nothing here is imported.

One concept per module:

- `client`: the paho-mqtt client as the appliance builds it (MQTT 5, TLS, login), the
  topic names, and what a failed connection means (`LinkError`, with a fix);
- `discovery`: the Home Assistant discovery configs;
- `commands`: like / skip / music on / music off from the command topic, deduplicated;
- `worker`: `MqttLink`, the Worker thread that owns the connection and publishes the
  availability, state and events (never on the frame loop);
- `fleet`: the read-only `emotion-appliance fleet` view of every appliance on a broker.
"""
