"""Overlays, figures and tables made from maps and metrics (PNG / HTML / JSON / CSV)."""
