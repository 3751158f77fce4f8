"""The Paxos Commit coordinator (leader and registrar): the registrar's pure rules
(:mod:`coordinator.rules`) and the gRPC service (:mod:`coordinator.service`). The leader's
rules and driver are shared with resource managers: :mod:`rm_sdk.ballots`,
:mod:`rm_sdk.leader`."""
