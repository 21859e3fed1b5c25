"""The training loop and what surrounds it: lr schedule, processes (torchrun), the end of a run
(predictions, summary), provenance, logs and TensorBoard, the run directory's lock, and the step benchmark.
"""
