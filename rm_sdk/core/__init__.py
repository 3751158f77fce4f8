"""The Paxos Commit core: every role as a pure, deterministic state machine.

Feed a machine an event (a message, a tick, the result of a resource manager's work) with
the current time; it appends what to do to a :class:`~rm_sdk.core.ready.Ready`: messages
to send, answers, trace events. No grpc, SQL, clock, randomness or await in here (CI
checks); the services, the seeded simulator and the golden scenarios all run this code.
"""
