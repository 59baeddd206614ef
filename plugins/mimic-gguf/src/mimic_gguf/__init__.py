"""mimic-harness backend for GGUF models run in process by llama.cpp (``gguf:default``, ``gguf:smollm2``)."""

from mimic_gguf.plugin import create_gguf, register_mimics

__version__ = "0.1.0"
__all__ = ["create_gguf", "register_mimics", "__version__"]
