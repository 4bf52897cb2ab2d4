"""How a gato-jax job starts: local multi-process, TPU VM pod slices, GKE JobSets, SLURM clusters."""
