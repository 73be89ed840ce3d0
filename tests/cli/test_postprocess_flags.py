"""The post-processing flags of ssdfast-detect, -eval and -export: one helper declares them (each
command keeps its spellings), builds one PostprocessSettings, and turns a value out of range into one
usage-error line naming the flag."""
from __future__ import annotations

import pytest

from ssdfast.cli import detect, export
from ssdfast.cli import eval as eval_cli
from ssdfast.cli._common import postprocess_settings
from ssdfast.ops import DISPLAY, EVALUATION, PostprocessSettings

#: What each command needs besides the post-processing flags to parse.
REQUIRED = {detect: ["m.pth", "a.jpg"], eval_cli: ["--trained-model", "m.pth", "--dataset", "d"], export: ["m.pth"]}

#: Each command's spellings of score threshold, NMS IoU, top-k and max detections (users' flags).
SPELLINGS = {
    detect: [("--threshold", "--score-threshold", "--score_threshold"),
             ("--iou-threshold", "--nms-iou-threshold", "--iou_threshold"),
             ("--top-k", "--candidates-per-class", "--top_k"),
             ("--max-detections", "--max_detections")],
    eval_cli: [("--score-threshold", "--score_threshold"),
               ("--nms-iou-threshold",),
               ("--top-k", "--top_k"),
               ("--max-detections", "--max_detections")],
    export: [("--score-threshold", "--score_threshold"),
             ("--iou-threshold", "--nms-threshold", "--nms_threshold"),
             ("--top-k", "--top_k"),
             ("--max-detections", "--max_detections")],
}
COMMANDS = pytest.mark.parametrize("command", list(SPELLINGS), ids=["detect", "eval", "export"])


def _settings(command, flags: list[str]) -> PostprocessSettings:
    return postprocess_settings(command.build_parser().parse_args(REQUIRED[command] + flags))


@pytest.mark.parametrize("command, preset", [(detect, DISPLAY), (eval_cli, EVALUATION), (export, DISPLAY)],
                         ids=["detect", "eval", "export"])
def test_defaults_are_the_presets(command, preset):
    assert _settings(command, []) == preset


@COMMANDS
def test_every_spelling_gives_the_same_value(command):
    want = PostprocessSettings(score_threshold=0.25, iou_threshold=0.3, top_k=10, max_detections=7)
    for spelling in range(3):
        flags = []
        for spellings, value in zip(SPELLINGS[command], ("0.25", "0.3", "10", "7")):
            flags += [spellings[min(spelling, len(spellings) - 1)], value]
        assert _settings(command, flags) == want, flags


def test_eval_iou_threshold_is_the_matching_iou_not_the_nms_one():
    args = eval_cli.build_parser().parse_args(REQUIRED[eval_cli] + ["--iou-threshold", "0.7"])
    assert args.match_iou == 0.7 and postprocess_settings(args) == EVALUATION
    with pytest.raises(SystemExit) as exc:  # checked as a number in [0, 1] by argparse
        eval_cli.build_parser().parse_args(REQUIRED[eval_cli] + ["--iou-threshold", "1.5"])
    assert exc.value.code == 2


@COMMANDS
@pytest.mark.parametrize("position, value, message", [
    (0, "1.5", "should be in [0, 1], got 1.5"),
    (1, "-0.1", "should be in [0, 1], got -0.1"),
    (1, "nan", "should be in [0, 1], got nan"),
    (2, "0", "should be a positive integer, got 0"),
    (3, "-5", "should be a positive integer, got -5"),
])
def test_a_bad_value_is_one_usage_line_naming_the_flag(command, position, value, message, capsys):
    flag = SPELLINGS[command][position][0]
    code = command.main(REQUIRED[command] + [flag, value])
    err = capsys.readouterr().err
    assert code == 2
    assert err == f"error: {flag} {message}\n"
