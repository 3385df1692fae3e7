"""What a trained model has learned: evaluation by position, roll-out, classical baselines, embeddings,
layer probes and scaling fits. `analyze.py` is the command line over these modules."""
