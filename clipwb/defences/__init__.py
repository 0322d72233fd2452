"""Typographic-attack defences that PO is compared with (notebook 07), each from its paper:

- ``interpolation``: PAINT / WiSE-FT weight interpolation between the zero-shot and a fine-tuned model;
- ``prefix``: Defense-Prefix, one learned token before the class name, both towers frozen;
- ``projection``: a learned linear projection that keeps visual concepts and drops written ones;
- ``heads``: training-free ablation of the image tower's attention heads that carry the written word.

Each returns what ``evaluation.classifier.ZeroShotClassifier`` needs, so that every defence is evaluated by the
same code."""
