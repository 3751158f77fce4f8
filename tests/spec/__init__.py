"""TLC runs of the TLA+ spec (spec/check.py): real models pass, seeded mutations fail."""
