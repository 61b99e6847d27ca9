"""Training Mimi: data, corpora, losses, discriminators and the training loop."""
