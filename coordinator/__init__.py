"""The Paxos Commit coordinator (leader and registrar): pure rules
(:mod:`coordinator.rules`), the ballot driver (:mod:`coordinator.leader`) and the gRPC
service (:mod:`coordinator.service`)."""
