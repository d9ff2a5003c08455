"""The statistics behind every comparison kwsearch shows: rank agreement of two rankings, and the
agreement of a study's proxy with full training."""

from kwsearch.stats._agreement import ProxyAgreement, ReplayResult, proxy_agreement, replay_results
from kwsearch.stats._rank import Statistic, default_top_k, rank_agreement

__all__ = [
    "ProxyAgreement",
    "ReplayResult",
    "Statistic",
    "default_top_k",
    "proxy_agreement",
    "rank_agreement",
    "replay_results",
]
