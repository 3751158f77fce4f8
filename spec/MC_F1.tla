------------------------------- MODULE MC_F1 --------------------------------
(* F = 1: three acceptors. Constants are in MC_F1.cfg.                     *)
EXTENDS PaxosCommit, TLC

\* Acceptors and RMs are interchangeable: nothing orders them, and every
\* property checked is symmetric in both. Leaders are ordered (ballots), so
\* they are not in the symmetry set.
Symmetry == Permutations(Acceptor) \cup Permutations(RM)
=============================================================================
