--------------------------- MODULE MC_ReuseBallot ---------------------------
(* Mutation 2 (DESIGN.md pitfall 2): a leader that sends a second 2a at a  *)
(* ballot it already used, computed from a different majority of 1b's, so  *)
(* two values go out at one (instance, ballot). MC_ReuseBallot.cfg sets    *)
(* FreshBallot <- AnyBallot; the model is MC_F1_Recovery's (two leaders:   *)
(* one ballot alone cannot choose two values).                             *)
(* Expected: TLC reports OneValuePerInstance violated.                     *)
EXTENDS PaxosCommit, TLC

AnyBallot(l, b) == TRUE

Symmetry == Permutations(Acceptor) \cup Permutations(RM)

RMInstancesOnly == IF LiveIns = {Registrar} THEN {} ELSE {LiveIns \ {Registrar}}
\* Overrides CollectionEnabled (see the cfg): collection is checked elsewhere.
NoCollection == FALSE
=============================================================================
