"""Hydra launcher plugins of the harness: ``launcher=gpu_pool`` and ``launcher=slurm`` (see :mod:`.launchers`)."""
