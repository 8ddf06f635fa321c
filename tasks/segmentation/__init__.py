"""Semantic segmentation tasks (ADE20K): mini data and layout checks."""
