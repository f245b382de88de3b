"""The training runtime: setup, the loop and its steps, the feed, checkpoints and faults."""
