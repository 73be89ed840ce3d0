"""pytest-benchmark: end-to-end cases at small sizes (CPU): training step, inference, COCO evaluation.

    python -m pytest benchmarks/test_bench_e2e.py --benchmark-autosave  # JSON in benchmarks/results/pytest-benchmark/
    python -m pytest benchmarks/test_bench_e2e.py --benchmark-compare     # against the last saved run
    python -m pytest benchmarks -q --benchmark-disable                     # smoke: every case runs once

Each case's contenders share one group, so the table lists them side by side. The full-size
comparison (all networks, batch 32 inference, 5,000-image COCO evaluation) is
``python -m benchmarks.run``.
"""
from __future__ import annotations

import functools

import pytest
import torch

from . import eval_cases, infer_cases, train_cases

TRAIN_BATCH = 2
TRAIN_NETWORKS = ("mb3-large-ssd-lite",)  # vgg16-ssd: python -m benchmarks.run --section train
INFER_BATCH = 1
COCO_IMAGES, COCO_DETECTIONS = 500, 10


@functools.lru_cache(maxsize=None)
def _train(name: str) -> dict:
    return train_cases.train_case(name, TRAIN_BATCH)


@functools.lru_cache(maxsize=None)
def _infer(name: str) -> dict:
    return infer_cases.infer_case(name, INFER_BATCH)


@functools.lru_cache(maxsize=None)
def _coco() -> dict:
    return eval_cases.coco_eval_case(COCO_IMAGES, COCO_DETECTIONS)


def _run(benchmark, fn, rounds: int = 3):
    """A few rounds of a slow call (one call each); inference mode as in ``benchmarks.run``."""
    with torch.inference_mode():
        return benchmark.pedantic(fn, rounds=rounds, warmup_rounds=1)


_TRAIN = [(n, w) for n in TRAIN_NETWORKS for w in ("native", "reference", "torchvision", "torchvision-cl")]


@pytest.mark.parametrize("network,who", _TRAIN, ids=[f"{n}-{w}" for n, w in _TRAIN])
def test_train_step(benchmark, network, who):
    contenders = _train(network)
    if who not in contenders:
        pytest.skip(f"no {who} contender here (ssdfast._C not built?)")
    benchmark.group = f"train step {network} batch {TRAIN_BATCH}"
    _run(benchmark, contenders[who])


_INFER = [(n, w) for n in infer_cases.INFER_PAIRS
          for w in ("ssdfast", "torchvision", "torchvision-cl", "onnxruntime", "ssdfast-onnxruntime",
                    "ssdfast-openvino")]


@pytest.mark.parametrize("network,who", _INFER, ids=[f"{n}-{w}" for n, w in _INFER])
def test_inference(benchmark, network, who):
    contenders = _infer(network)
    if who not in contenders:
        pytest.skip(f"no {who} contender here (onnxruntime / openvino not installed?)")
    benchmark.group = f"inference {network} vs {infer_cases.INFER_PAIRS[network][0]} batch {INFER_BATCH}"
    detections = _run(benchmark, contenders[who], rounds=5)
    assert len(detections) == INFER_BATCH


@pytest.mark.parametrize("who", ["ssdfast", "pycocotools", "faster-coco-eval"])
def test_coco_eval(benchmark, who):
    contenders = _coco()
    if who not in contenders:
        pytest.skip(f"{who} is not installed")
    benchmark.group = f"COCO evaluation {COCO_IMAGES} images x {COCO_DETECTIONS} detections"
    result = _run(benchmark, contenders[who], rounds=2)
    stats = [result[k] for k in ("AP", "AP50")] if isinstance(result, dict) else list(result[:2])
    assert 0.0 <= stats[0] <= stats[1] <= 1.0
