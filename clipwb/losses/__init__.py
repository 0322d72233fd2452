"""Losses as pure functions of tensors: preference optimisation (``po.py``: DPO, IPO, KTO, CE and the registry of
PO methods) and optimal-transport contrastive losses (``ot.py``: Sinkhorn, the GCA family, InfoNCE/RINCE). The
MMCL family's losses live with its linear models in ``theory.mmcl``."""
