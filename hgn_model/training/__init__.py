"""Training HGN and its baselines: config, data plan, the loop, checkpoints, Ray Train."""
