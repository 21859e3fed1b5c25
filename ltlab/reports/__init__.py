"""What a person opens: batches of notebooks (papermill, local or SLURM), HTML pages, run pages, the
results archive, its leaderboard, the results queue that fills it, and the notebooks' analysis helpers.
"""
