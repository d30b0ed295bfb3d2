"""Explanation methods: one small class each, all behind one registry (see `base.py`)."""
