"""kwsearch: architecture search and ablation for KernelWarehouse-style dynamic convolution."""

__version__ = "0.1.0"
