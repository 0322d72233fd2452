"""Datasets built from the world or image folders: typographic attacks (issue 3 adds builders and loaders)."""
