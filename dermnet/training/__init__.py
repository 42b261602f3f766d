"""Training: configuration-driven runs, distribution, callbacks."""
