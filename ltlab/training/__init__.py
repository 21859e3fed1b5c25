"""The training loop and what surrounds it: lr schedule, processes (torchrun), the end of a run
(predictions, summary), provenance, logs and TensorBoard, and the step benchmark.
"""
