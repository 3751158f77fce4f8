"""The Paxos Commit acceptor: pure rules (:mod:`acceptor.rules`), durable storage with
group commit (:mod:`acceptor.storage`), and the gRPC service (:mod:`acceptor.service`)."""
