--------------------------- MODULE MC_CollectEarly ---------------------------
(* Mutation 4 (DESIGN.md pitfall 8): an acceptor that collects a decided   *)
(* transaction before every RM of the set acknowledged the outcome. Once   *)
(* the compact record's retention ends, a prepared RM that has not applied *)
(* the outcome can no longer learn it. MC_CollectEarly.cfg sets            *)
(* AllAcknowledged <- CollectBeforeAcks; the model is MC_F0's (one        *)
(* acceptor, so one Collect and one Expire suffice).                       *)
(* Expected: TLC reports OutcomeLearnable violated.                        *)
EXTENDS PaxosCommit, TLC

CollectBeforeAcks == TRUE

Symmetry == Permutations(Acceptor) \cup Permutations(RM)
=============================================================================
