"""Datasets: the typographic renderer with font/word hold-outs (typographic.py), resumable typographic dataset
builders with manifests for the world and image folders (builders.py), and loaders of real typographic sets
(RTA-100, PAINT, "Disentangling") in a documented layout (real.py)."""
