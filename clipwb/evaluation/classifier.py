"""A zero-shot classifier as a defence sees it: how images become normalised features, the class embeddings and
the logit scale. A fine-tuned or edited model changes the first (and maybe the scale), a learned prompt token
(Defense-Prefix) the class embeddings, a projection or a steering map both or one; every defence is evaluated
through the same ``ZeroShotClassifier`` and so by the same code (``evaluation.typographic.po_eval``)."""
from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import torch

from ..models.inputs import encode_images
from .zeroshot import OBJECT_TEMPLATES, class_text_features


@dataclass
class ZeroShotClassifier:
    encode: Callable[[np.ndarray], torch.Tensor]  # uint8 images (n, H, W, 3) -> normalised features (n, d)
    text: torch.Tensor  # (C, d) normalised class embeddings
    scale: torch.Tensor  # the logit scale (exp of the model's log scale), a 0-d float tensor

    def cosines(self, images: np.ndarray) -> torch.Tensor:
        """(n, C) cosine similarities: argmax is the zero-shot prediction."""
        with torch.no_grad():
            return self.encode(images) @ self.text.T

    def log_probs(self, images: np.ndarray) -> torch.Tensor:
        """(n, C) log pi(c|x) at the classifier's own logit scale."""
        return self.log_probs_of(self.cosines(images))

    def log_probs_of(self, cosines: torch.Tensor) -> torch.Tensor:
        """``log_probs`` from cosines already computed (``cosines``)."""
        return torch.log_softmax(self.scale * cosines, dim=-1)


def model_classifier(model, tokenizer, classes, templates=OBJECT_TEMPLATES) -> ZeroShotClassifier:
    """The plain zero-shot classifier of an open_clip model: its image features, its prompt-ensemble class
    embeddings (``class_text_features``) and its logit scale."""
    with torch.no_grad():
        scale = model.logit_scale.exp().float()
    return ZeroShotClassifier(lambda x: encode_images(model, x), class_text_features(model, tokenizer, classes,
                                                                                     templates), scale)


class MemoFeatures:
    """A model's normalised image features of every array it is asked for, computed once per array (the
    pretrained model's features, read by every evaluation against it and by defences that keep its image tower)."""

    def __init__(self, model):
        self.model, self._memo = model, {}

    def __call__(self, images: np.ndarray) -> torch.Tensor:
        key = (id(images), images.shape)
        if key not in self._memo:
            self._memo[key] = (images, encode_images(self.model, images))  # keep the array alive: ids stay unique
        return self._memo[key][1]


def memo_classifier(model, tokenizer, classes, templates=OBJECT_TEMPLATES) -> ZeroShotClassifier:
    """``model_classifier`` whose image features are computed once per array (``MemoFeatures``): for a model that
    does not change, such as the pretrained reference of every PO evaluation."""
    base = model_classifier(model, tokenizer, classes, templates)
    return ZeroShotClassifier(MemoFeatures(model), base.text, base.scale)
