"""Time of `kwsearch inspect`'s work (build on the meta device, count parameters and MACs).

    .venv/bin/python bench/accounting.py

Prints seconds per model for a few large configs; the target is well under a second for a
100M-parameter model.
"""

from __future__ import annotations

import time

import torch

from kwsearch.models import account, build_model, parse_model_config

KW = {"family": "kw", "reduction": 0.0625, "sharing_range": ["layer", "conv"]}
CONFIGS = {
    "resnet18 static": {"backbone": "resnet18"},
    "resnet50 kw1x (28M)": {"backbone": "resnet50", "conv": {**KW, "cell_num_ratio": 1}},
    "resnet50 kw4x (102M)": {"backbone": "resnet50", "conv": {**KW, "cell_num_ratio": 4}},
}


def main() -> None:
    account(build_model(parse_model_config({"backbone": "resnet18"})).to("meta"), (3, 32, 32))  # warm-up
    for label, data in CONFIGS.items():
        start = time.perf_counter()
        with torch.device("meta"):
            model = build_model(parse_model_config(data))
        report = account(model, (3, 224, 224))
        seconds = time.perf_counter() - start
        print(f"{label:<24} {report.params:>12,} params {report.macs:>16,} MACs  {seconds:.3f} s")


if __name__ == "__main__":
    main()
