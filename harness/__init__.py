"""mimic-harness: measure how predictable language models are when you steer them."""

from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("mimic-harness")
except PackageNotFoundError:  # running from a source tree that is not installed
    __version__ = "0.0.0+local"

from harness.hookspecs import hookimpl  # noqa: E402  (plugins write @harness.hookimpl)

__all__ = ["__version__", "hookimpl"]
