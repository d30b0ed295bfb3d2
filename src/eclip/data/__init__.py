"""Datasets: synthetic scenes with exact masks, the standard segmentation sets, image-text pairs."""
