"""Language-model tables and figures drawn from results/tables/pruning.csv and the rounds' metrics JSONs.

frames: load pruning.csv, look up perplexities, choose the best round on the validation split.
tables: the paper's LLM table, methods side by side, the controls (issue 6) and the share sentences.
dynamics: mask positions changed between rounds.  versus: the paper's numbers beside this run's.
figures: perplexity vs round, methods, mask dynamics.
"""
