------------------------------ MODULE TCommit ------------------------------
(***************************************************************************)
(* Transaction Commit, the problem that Paxos Commit solves (Gray &        *)
(* Lamport, "Consensus on Transaction Commit", TODS 2006, section 2).      *)
(*                                                                         *)
(* Each resource manager (RM) is working, then prepared, then committed or *)
(* aborted; a working RM may also abort. The one safety requirement is     *)
(* consistency: no RM commits while another aborts. An RM may commit only  *)
(* once every RM is prepared (or already committed), and may abort only    *)
(* while no RM has committed. This is a spec of what is allowed, with no   *)
(* messages and no failures: PaxosCommit.tla implements it (see the        *)
(* refinement there).                                                      *)
(***************************************************************************)
CONSTANT RM

VARIABLE rmState

TCTypeOK == rmState \in [RM -> {"working", "prepared", "committed", "aborted"}]

TCInit == rmState = [r \in RM |-> "working"]

canCommit == \A r \in RM : rmState[r] \in {"prepared", "committed"}

notCommitted == \A r \in RM : rmState[r] # "committed"

Prepare(r) ==
    /\ rmState[r] = "working"
    /\ rmState' = [rmState EXCEPT ![r] = "prepared"]

Decide(r) ==
    \/ /\ rmState[r] = "prepared"
       /\ canCommit
       /\ rmState' = [rmState EXCEPT ![r] = "committed"]
    \/ /\ rmState[r] \in {"working", "prepared"}
       /\ notCommitted
       /\ rmState' = [rmState EXCEPT ![r] = "aborted"]

TCNext == \E r \in RM : Prepare(r) \/ Decide(r)

TCSpec == TCInit /\ [][TCNext]_rmState

TCConsistent ==
    \A r1, r2 \in RM : ~(rmState[r1] = "aborted" /\ rmState[r2] = "committed")

THEOREM TCSpec => [](TCTypeOK /\ TCConsistent)
=============================================================================
