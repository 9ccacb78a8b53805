"""Training: the Lightning module, tracking and the train entry point."""
