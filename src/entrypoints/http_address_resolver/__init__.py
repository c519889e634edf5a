"""http-address-resolver: the namespace -> microVM address agent the demux asks."""
