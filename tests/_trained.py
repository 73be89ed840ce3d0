"""A briefly trained SSD on a generated VOC set: a model whose detections mean something, for the tests
that compare runtimes, exports and their mAP.

``mb2-ssd-lite`` (width 0.25, 96 px) is trained with Adam for :data:`STEPS` steps on the test split of a
generated 60-image, 2-class VOC set -- the images it is then scored on, so a few seconds of training give
confident, mostly right detections (VOC mAP ~0.4-1.0 depending on the machine's float rounding), which
is what a comparison of runtimes and of mAP needs.
"""
from __future__ import annotations

from pathlib import Path

import torch

from ssdfast.data import build_dataset, make_loader
from ssdfast.data.synthetic import generate
from ssdfast.data.transforms import EvalTransform
from ssdfast.loss import MultiBoxLoss
from ssdfast.model_files import save_checkpoint
from ssdfast.models import create_model

NET, SIZE, STEPS = "mb2-ssd-lite", 96, 50


def train_briefly(root: Path) -> dict:
    """Generate the data set under ``root / "voc"``, train, save ``root / "trained.pth"``.
    -> ``{"data": the VOC root, "checkpoint": the file, "class_names": [...]}``."""
    data = Path(generate(root / "voc", format="voc", num_images=60, image_size=SIZE, seed=0, num_classes=2))
    torch.manual_seed(0)
    model = create_model(NET, 3, width_mult=0.25, image_size=SIZE)
    config = model.config
    dataset = build_dataset("voc", [str(data)], split="test", transform=EvalTransform(SIZE, config.mean, config.std))
    loader = make_loader(dataset, 16, True, 0)
    loss = MultiBoxLoss(model.priors, variances=config.variances)
    optimizer = torch.optim.Adam(model.parameters(), lr=0.02)
    model.train()
    step = 0
    while step < STEPS:
        for batch in loader:
            regression, classification = loss(*model(batch.images), batch.gt_boxes, batch.gt_labels)
            optimizer.zero_grad()
            (regression + classification).backward()
            optimizer.step()
            step += 1
            if step == STEPS:
                break
    model.eval()
    checkpoint = root / "trained.pth"
    save_checkpoint(checkpoint, model, dataset.class_names)
    return {"data": data, "checkpoint": checkpoint, "class_names": list(dataset.class_names)}
