"""Data plane: schema migrations, JetStream declarations and the dead-letter forwarder."""
