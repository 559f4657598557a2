"""Synthetic sparse recovery (the paper's Figure 1 and appendix figure, plus a local-rate experiment).

Modules: images (MNIST / sklearn digits signals), problems (instances batched over runs, losses),
algorithms (k-IHT, Topk-I-OBS, theoretical I-OBS as pure tensor functions), solve (iteration drivers that
record trajectories), trajectories (npz I/O), experiments (a config's experiments: problems, runs and their
planning), report (tables), figures (plots). The Snakemake jobs that run them are iobs.pipeline.synthetic's.
"""
