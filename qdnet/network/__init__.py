"""Networks of QKD links: the network YAML, link rates, and key-relay planning."""
