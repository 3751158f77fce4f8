--------------------------- MODULE MC_F1_Recovery ---------------------------
(* F = 1 with two competing leaders (ballots <<1, 1>> < <<1, 2>>) on one   *)
(* RM's instance. Constants are in MC_F1_Recovery.cfg. check.py also runs  *)
(* MC_F1_Recovery_witness.cfg, which expects NoRecoveredAbort violated.    *)
EXTENDS PaxosCommit, TLC

Symmetry == Permutations(Acceptor) \cup Permutations(RM)

\* Overrides BallotInstances (see the cfg): leaders run ballots on RM
\* instances only, and the registrar's instance keeps its owner's ballot 0.
\* Two leaders on both instances are beyond a minute of TLC; MC_F1 and MC_F0
\* cover the recovery of the registrar's instance.
RMInstancesOnly == IF LiveIns = {Registrar} THEN {} ELSE {LiveIns \ {Registrar}}

\* Witness: an RM that voted prepared ends aborted, because a recovery
\* ballot found its vote at no majority and proposed the free value.
NoRecoveredAbort ==
    ~\E r \in RM :
        /\ rmState[r] = "aborted"
        /\ [type |-> "phase2a", bal |-> Ballot0,
            prop |-> {[ins |-> r, val |-> "prepared"]}] \in msgs
\* Overrides CollectionEnabled (see the cfg): no collection in this model.
NoCollection == FALSE
=============================================================================
