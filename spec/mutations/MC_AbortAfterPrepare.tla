------------------------ MODULE MC_AbortAfterPrepare ------------------------
(* Mutation 3 (DESIGN.md pitfall 3): an RM that aborts on its own after it *)
(* voted prepared. MC_AbortAfterPrepare.cfg sets                           *)
(* CanAbortUnilaterally <- AbortAnyTime; the model is MC_F0's.             *)
(* Expected: TLC reports TCConsistent violated.                            *)
EXTENDS PaxosCommit, TLC

AbortAnyTime(r) == rmState[r] \in {"working", "prepared"}

Symmetry == Permutations(Acceptor) \cup Permutations(RM)
\* Overrides CollectionEnabled (see the cfg): collection is checked elsewhere.
NoCollection == FALSE
=============================================================================
