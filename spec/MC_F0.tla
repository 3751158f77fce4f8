------------------------------- MODULE MC_F0 --------------------------------
(* F = 0: one acceptor, where Paxos Commit is two-phase commit (paper      *)
(* section 5); two RMs and two competing leaders. Constants are in         *)
(* MC_F0.cfg. check.py also runs MC_F0_witness.cfg, which expects          *)
(* NoRecoveredCommit to be violated.                                       *)
EXTENDS PaxosCommit, TLC

Symmetry == Permutations(Acceptor) \cup Permutations(RM)

\* Witness: a commit in which the registrar's set was accepted at a leader's
\* ballot, i.e. a recovery leader re-proposed the owner's set (it never
\* invents one) and the transaction still committed.
NoRecoveredCommit ==
    ~/\ [type |-> "outcome", out |-> "commit"] \in msgs
     /\ \E m \in msgs : m.type = "phase2b" /\ m.ins = Registrar /\ m.bal # Ballot0
=============================================================================
