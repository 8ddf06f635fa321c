"""Analyses of the Dark Secrets of MIM paper."""
