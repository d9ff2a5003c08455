"""The paper's claims, tested on a study's proxy: where a study trained the static baseline and
KernelWarehouse presets beside its search, does the published ordering hold, with the difference
and its 95% interval, and in words when it does not or cannot tell.

Published (Li & Yao, ICML 2024; ImageNet top-1 of ResNet-18, ResNet-50, ConvNeXt-T and
MobileNetV2 1.0x/0.5x, in OSVAI/KernelWarehouse's README): every KernelWarehouse preset is more
accurate than its static backbone, and a larger warehouse (1/4x < 1/2x < 1x < 2x < 4x) more
accurate than a smaller one.
"""

from __future__ import annotations

from dataclasses import dataclass

from kwsearch.stats._intervals import Estimate, difference

# the KernelWarehouse presets in the order of their warehouse size n
PRESET_ORDER = ("kw_1d4x", "kw_1d2x", "kw_1x", "kw_2x", "kw_4x")
SOURCE = "Li & Yao, ICML 2024 (ImageNet, every published backbone)"


@dataclass(frozen=True)
class Claim:
    """``higher`` is more accurate than ``lower``, as published; ``verdict``: ``holds`` (the
    difference's interval lies above 0 on this proxy), ``reversed`` (below 0), ``cannot tell``
    (it contains 0) or ``not measured`` (no interval)."""

    higher: str
    lower: str
    difference: float
    low: float | None
    high: float | None
    verdict: str

    def describe(self) -> str:
        claim = f"{_name(self.higher)} above {_name(self.lower)}"
        if self.low is None:
            return f"{claim}: {self.difference:+.4f}, not measured beyond that (no interval)."
        measured = f"{self.difference:+.4f} (95% CI {self.low:+.4f} to {self.high:+.4f})"
        words = {
            "holds": "holds on this proxy",
            "reversed": "reversed on this proxy: the static or smaller model is more accurate beyond noise",
            "cannot tell": "cannot tell on this proxy: the difference is within its noise",
        }[self.verdict]
        return f"{claim}: {measured}; {words}."

    def as_dict(self) -> dict:
        return dict(self.__dict__)


def published_claims(baselines: dict[str, Estimate]) -> list[Claim]:
    """The published orderings among the trained ``baselines`` (label -> accuracy): each preset
    against ``static``, then each preset against the next smaller one."""
    presets = [label for label in PRESET_ORDER if label in baselines]
    pairs = [(label, "static") for label in presets if "static" in baselines]
    pairs += list(zip(presets[1:], presets[:-1], strict=True))
    claims = []
    for higher, lower in pairs:
        found = difference(baselines[higher], baselines[lower])
        d = baselines[higher].value - baselines[lower].value
        if found is None:
            claims.append(Claim(higher, lower, d, None, None, "not measured"))
            continue
        _, low, high = found
        verdict = "holds" if low > 0 else "reversed" if high < 0 else "cannot tell"
        claims.append(Claim(higher, lower, d, low, high, verdict))
    return claims


def _name(label: str) -> str:
    if label == "static":
        return "static"
    return "KW " + label.removeprefix("kw_").replace("1d", "1/")
