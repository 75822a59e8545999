"""The step contract: every step a Job can run, declared once (see registry.py)."""
