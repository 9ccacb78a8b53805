"""Corpora, manifests, unit caches and the Lightning data module."""
