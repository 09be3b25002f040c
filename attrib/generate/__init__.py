"""`attrib generate`: query images with their prompts, seeds and sampling trajectories."""
