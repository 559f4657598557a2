# One-shot pruning (round 0) and I-OBS rounds with their controls. iterative.granularity chooses the grain:
# chain (default): one job per (model, method) prunes every sparsity, one job per (model, variant, sparsity) runs
#   every round (a sparsity-free variant, dense_ft: one per model), all evaluations in process (iobs.pipeline.chains);
# round: one job per (model, method, sparsity) and per round (round r consumes round r-1's state), evaluated by
#   rule evaluate (eval.smk): the grain where a round costs GPU-hours.
# The model stays on the CPU; one decoder layer at a time runs on the rule's GPU when resources give it one.

# Wildcard constraints from the one registry of solvers, variants and the sparsity grammar (iobs.registry).
METHODS = registry.wildcard(registry.oneshot_methods())
VARIANTS = registry.wildcard(registry.variant_names())
SPARSITY = registry.SPARSITY_PATTERN


if CHAIN:

    include: "chains.smk"

else:

    include: "rounds.smk"
