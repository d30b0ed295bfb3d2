"""Contrastive training and fine-tuning of CLIPs (vanilla pooling or ECLIP's masked max pooling)."""
