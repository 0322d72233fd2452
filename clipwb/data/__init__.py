"""Datasets built from the world or image folders: the typographic renderer (typographic.py) and resumable
typographic dataset builders with manifests (builders.py). Real typographic sets (RTA-100, PAINT) and
font/word hold-outs are still to come (issue 3)."""
