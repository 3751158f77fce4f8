-------------------------- MODULE MC_ForgetPromise --------------------------
(* Mutation 1 (DESIGN.md pitfall 1): an acceptor that keeps only what it   *)
(* accepted on disk, not its promise. After a restart its mbal falls back  *)
(* to its bal (or to ballot 0), so it accepts a ballot-0 vote it promised  *)
(* to ignore. MC_ForgetPromise.cfg sets Restarted <- ForgetPromise; the    *)
(* model is MC_F1's with one RM.                                           *)
(* Expected: TLC reports OneValuePerInstance violated.                     *)
EXTENDS PaxosCommit, TLC

ForgetPromise(s) == [s EXCEPT !.mbal = IF s.bal = NoBallot THEN Ballot0 ELSE s.bal]

Symmetry == Permutations(Acceptor) \cup Permutations(RM)
\* Overrides CollectionEnabled (see the cfg): collection is checked elsewhere.
NoCollection == FALSE
=============================================================================
