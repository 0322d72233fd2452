"""Losses as pure functions of tensors: preference optimisation (po.py); optimal-transport contrastive losses and
the MMCL family come with their issues."""
