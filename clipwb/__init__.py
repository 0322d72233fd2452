"""clipwb: a notebook-centric research workbench for aligning contrastive vision-language models (CLIP)."""
__version__ = "0.1.0"
