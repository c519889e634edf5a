"""AddressResolver implementations: the HTTP client the demux uses and the agent's backends."""
