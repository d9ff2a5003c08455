"""kwsearch: architecture search and ablation for KernelWarehouse-style dynamic convolution."""

__version__ = "0.1.0"

__all__ = ["__version__", "convert", "load"]


def __getattr__(name: str):
    # Lazy, so `kwsearch --version` and `--help` do not pay for importing torch.
    if name == "convert":
        from kwsearch.models.convert import convert

        return convert
    if name == "load":
        from kwsearch.replay.export import load

        return load
    raise AttributeError(f"module 'kwsearch' has no attribute {name!r}")
