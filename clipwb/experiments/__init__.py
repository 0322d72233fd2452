"""The experiments behind the notebooks, one module per topic: ``po`` (notebook 02: PO methods compared, sweeps),
``concepts`` (notebooks 03-04: concept data, directions, steering maps, their evaluation), ``gca`` (notebook 05:
small encoders trained with OT contrastive losses) and ``mmcl`` (notebook 06: MMCL as SVD, unpaired data).
They sit on top of the trainers (``training``), the steering maps (``steering``) and the MMCL mathematics
(``theory``), which know nothing of them."""
