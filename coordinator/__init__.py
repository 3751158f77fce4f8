"""The Paxos Commit coordinator (leader and registrar): the gRPC service
(:mod:`coordinator.service`) that drives the coordinator node of the core
(:mod:`rm_sdk.core.coordinator`); the registrar's and leader's rules live in the core,
shared with resource managers, which run recovery ballots too."""
