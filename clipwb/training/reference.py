"""The frozen reference's log-probabilities pi_ref(c|x) over the class prompts, computed once per model and data
(the reference never trains and the data are not augmented) and kept in the run cache."""
from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F

from ..cache import cached_tensors, fingerprint
from ..evaluation.zeroshot import OBJECT_TEMPLATES, template_mean
from ..losses.po import policy_logprobs
from ..models.inputs import images_to_tensor
from ..precision import Precision


def class_features(model, tokens: torch.Tensor, n_classes: int) -> torch.Tensor:
    """(C, d) class embeddings of class-major prompt tokens (differentiable; ``zeroshot.template_mean``)."""
    return template_mean(model.encode_text(tokens), n_classes)


def logit_scale_of(model) -> torch.Tensor:
    return model.logit_scale.exp().float()


@torch.no_grad()
def image_features(model, images: np.ndarray, batch: int, device, prec: Precision) -> torch.Tensor:
    out = []
    for i in range(0, len(images), batch):
        x = prec.layout(images_to_tensor(images[i:i + batch], model))
        with prec.autocast_ctx(device):
            out.append(model.visual(x).float())
    return torch.cat(out)


@torch.no_grad()
def reference_logprobs(model, tokenizer, classes, images: np.ndarray, templates=OBJECT_TEMPLATES, batch: int = 512,
                       precision: Precision = Precision("fp32", "default")) -> torch.Tensor:
    """log pi_ref(c|x) for every image (n, C), computed once (the reference is frozen, the data not augmented)."""
    model.eval()
    device = next(model.parameters()).device
    tok = tokenizer([t.format(c) for c in classes for t in templates]).to(device)
    txt = class_features(model, tok, len(classes))
    feats = image_features(model, images, batch, device, precision)
    return policy_logprobs(F.normalize(feats, dim=-1), txt, logit_scale_of(model), normalized=True)


def cached_reference_logprobs(model, tokenizer, classes, images: np.ndarray, templates, precision: Precision,
                              cache: bool = True) -> torch.Tensor:
    """``reference_logprobs`` through the run cache (``clipwb.cache``), keyed by the reference model's weights, the
    images, classes, templates and precision: every method and sweep point trained from one pretrained model on one
    set computes them once. Returned on the model's device."""
    device = next(model.parameters()).device

    def run():
        return {"logp": reference_logprobs(model, tokenizer, classes, images, templates, precision=precision)}

    key = [fingerprint(model), fingerprint(images), list(classes), list(templates), precision.to_dict()]
    return cached_tensors("ref-logprobs", key, run, enabled=cache)["logp"].to(device)

