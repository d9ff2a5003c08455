"""The statistics behind every comparison kwsearch shows: accuracies with their intervals, what is
within a study's noise, rank agreement of two rankings, and the agreement of a study's proxy with
full training."""

from kwsearch.stats._agreement import ProxyAgreement, ReplayResult, proxy_agreement, replay_results
from kwsearch.stats._claims import Claim, published_claims
from kwsearch.stats._intervals import (
    Estimate,
    accuracy_estimate,
    difference,
    significantly_better,
    wilson_interval,
)
from kwsearch.stats._noise import FrontNoise, front_noise
from kwsearch.stats._rank import Statistic, default_top_k, rank_agreement

__all__ = [
    "Claim",
    "Estimate",
    "FrontNoise",
    "ProxyAgreement",
    "ReplayResult",
    "Statistic",
    "accuracy_estimate",
    "default_top_k",
    "difference",
    "front_noise",
    "proxy_agreement",
    "published_claims",
    "rank_agreement",
    "replay_results",
    "significantly_better",
    "wilson_interval",
]
