------------------------------- MODULE MC_F1 --------------------------------
(* F = 1: three acceptors, two RMs, one leader ballot. Constants are in    *)
(* MC_F1.cfg. check.py also runs MC_F1_witness.cfg, which expects NoCommit *)
(* to be violated: proof that the model commits at all.                    *)
EXTENDS PaxosCommit, TLC

\* Acceptors and RMs are interchangeable: nothing orders them, and every
\* property checked is symmetric in both. Leaders are ordered (ballots), so
\* they are not in the symmetry set.
Symmetry == Permutations(Acceptor) \cup Permutations(RM)

\* Witness: every RM of a set of two commits somewhere in the model.
NoCommit == ~\A r \in RM : rmState[r] = "committed"
\* Witness (MC_F1_Collect_witness.cfg): a committed transaction collected by
\* every acceptor, and a late message answered from a record.
NoCollectedCommit ==
    ~/\ \A a \in Acceptor : coll[a] = "commit"
     /\ \A r \in RM : rmState[r] = "committed"

\* Overrides CollectionEnabled (see the cfg): no collection in this model.
NoCollection == FALSE
=============================================================================
