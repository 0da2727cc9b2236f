"""Training: the plain PyTorch fine-tuning loop and step shared by sweeps and pretraining, and trainer
state in checkpoints (no pickle)."""
