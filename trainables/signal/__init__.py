"""Task family `signal`: connectivity recovery from simulated neural activity (spec: shared/specs/signal.md)."""
