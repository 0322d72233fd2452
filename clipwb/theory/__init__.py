"""Contrastive-learning theory in linear models: multimodal contrastive learning as SVD (Nakada et al.,
"Understanding Multimodal Contrastive Learning and Incorporating Unpaired Data", AISTATS 2023)."""
