"""Reference: py-faster-rcnn's ``lib/datasets/voc_eval.py`` (the VOC devkit's rules), one class at a
time, loops and all, to hold ssdfast's vectorised VOC AP to.

``dets``: per image ``{"boxes" [K, 4], "scores" [K], "labels" [K]}``; ``anns``: per image ``{"boxes"
[G, 4], "labels" [G], "difficult" [G]}``; boxes in the devkit's 1-based inclusive convention.
"""
from __future__ import annotations

import math

import numpy as np


def voc_ap_reference(rec, prec, use_07_metric):
    if use_07_metric:
        ap = 0.0
        for t in np.arange(0.0, 1.1, 0.1):
            p = 0 if np.sum(rec >= t) == 0 else np.max(prec[rec >= t])
            ap = ap + p / 11.0
        return ap
    mrec = np.concatenate(([0.0], rec, [1.0]))
    mpre = np.concatenate(([0.0], prec, [0.0]))
    for i in range(mpre.size - 1, 0, -1):
        mpre[i - 1] = np.maximum(mpre[i - 1], mpre[i])
    i = np.where(mrec[1:] != mrec[:-1])[0]
    return np.sum((mrec[i + 1] - mrec[i]) * mpre[i + 1])


def voc_eval_reference(dets, anns, cls, ovthresh, use_07_metric):
    class_recs, npos = {}, 0
    for i, a in enumerate(anns):
        m = a["labels"] == cls
        difficult = a["difficult"][m]
        class_recs[i] = {"bbox": a["boxes"][m].astype(float), "difficult": difficult, "det": [False] * int(m.sum())}
        npos += int(np.sum(~difficult))
    image_ids, confidence, BB = [], [], []
    for i, d in enumerate(dets):
        m = d["labels"] == cls
        image_ids += [i] * int(m.sum())
        confidence += d["scores"][m].tolist()
        BB += d["boxes"][m].tolist()
    confidence, BB = np.array(confidence), np.array(BB).reshape(-1, 4)
    sorted_ind = np.argsort(-confidence, kind="stable")
    BB = BB[sorted_ind, :]
    image_ids = [image_ids[x] for x in sorted_ind]
    nd = len(image_ids)
    tp, fp = np.zeros(nd), np.zeros(nd)
    for d in range(nd):
        R = class_recs[image_ids[d]]
        bb = BB[d, :].astype(float)
        ovmax = -np.inf
        BBGT = R["bbox"]
        if BBGT.size > 0:
            ixmin = np.maximum(BBGT[:, 0], bb[0])
            iymin = np.maximum(BBGT[:, 1], bb[1])
            ixmax = np.minimum(BBGT[:, 2], bb[2])
            iymax = np.minimum(BBGT[:, 3], bb[3])
            iw = np.maximum(ixmax - ixmin + 1.0, 0.0)
            ih = np.maximum(iymax - iymin + 1.0, 0.0)
            inters = iw * ih
            uni = (bb[2] - bb[0] + 1.0) * (bb[3] - bb[1] + 1.0) + (BBGT[:, 2] - BBGT[:, 0] + 1.0) * (
                BBGT[:, 3] - BBGT[:, 1] + 1.0
            ) - inters
            overlaps = inters / uni
            ovmax = np.max(overlaps)
            jmax = np.argmax(overlaps)
        if ovmax > ovthresh:
            if not R["difficult"][jmax]:
                if not R["det"][jmax]:
                    tp[d] = 1.0
                    R["det"][jmax] = 1
                else:
                    fp[d] = 1.0
        else:
            fp[d] = 1.0
    if npos == 0:
        return math.nan
    fp, tp = np.cumsum(fp), np.cumsum(tp)
    rec = tp / float(npos)
    prec = tp / np.maximum(tp + fp, np.finfo(np.float64).eps)
    return voc_ap_reference(rec, prec, use_07_metric)
