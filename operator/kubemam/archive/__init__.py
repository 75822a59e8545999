"""Archive artefacts that travel with the master: the EBUCore sidecar (pure, no I/O)."""
