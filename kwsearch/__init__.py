"""kwsearch: architecture search and ablation for KernelWarehouse-style dynamic convolution.

The calls a notebook makes (docs/notebooks.md): ``load_study``, ``run_search``, ``trials``,
``front``, ``build_model``, ``convert``, ``load`` and ``preprocessing``.
"""

__version__ = "0.1.0"

__all__ = [
    "__version__",
    "build_model",
    "convert",
    "front",
    "load",
    "load_study",
    "preprocessing",
    "run_search",
    "trials",
]

# name -> the module it lives in; imported on first use, so that `kwsearch --version` and `--help`
# do not pay for torch, and nothing but `run_search` loads Ray
_LAZY = {
    "build_model": "kwsearch.notebook",
    "convert": "kwsearch.models.convert",
    "front": "kwsearch.notebook",
    "load": "kwsearch.replay.export",
    "load_study": "kwsearch.search.study",
    "preprocessing": "kwsearch.notebook",
    "run_search": "kwsearch.search.runner",
    "trials": "kwsearch.notebook",
}


def __getattr__(name: str):
    if name in _LAZY:
        import importlib

        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'kwsearch' has no attribute {name!r}")
