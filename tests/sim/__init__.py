"""Seeded simulation of Paxos Commit: the pure core driven over a faulty simulated network."""
