"""hmer_train: PyTorch models, training and evaluation for hmer. Imports hmer_runtime, never the reverse."""
