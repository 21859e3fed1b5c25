"""Numbers from saved predictions, all numpy: metrics, failure scores, post-hoc rules, calibration,
label-shift estimation, the run summary, reading a run directory back, and how sure each number is.

Nothing here imports torch or the training code: every number can be recomputed from a run directory.
"""
