"""The ``paxos-commit`` command: local clusters, single services, the demo and benchmarks."""
