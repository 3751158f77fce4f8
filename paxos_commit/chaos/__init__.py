"""A Jepsen-style nemesis for paxos-commit: real processes (acceptors, coordinators,
resource managers and clients, each in a network namespace of its own), faults from a
seeded schedule, and an independent checker over what the clients were told and what the
resource managers applied.

Modules: :mod:`.network` (namespaces, nftables cuts), :mod:`.cluster` (the processes),
:mod:`.rm_process` (a resource manager served in a process of its own), :mod:`.workload`
(a client process), :mod:`.nemesis` (the seeded schedule and its faults),
:mod:`.checker` (the verdict), :mod:`.run` (``paxos-commit chaos``).
"""
