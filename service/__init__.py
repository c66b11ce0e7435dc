"""eco-outbox HTTP service: the ECO chat stream and passive-signal intake, backed by the outbox."""
