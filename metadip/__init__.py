"""metadip: meta-learned fast initialisations for Deep Image Prior.

``metadip.reconstruct(y, operator, init=...)`` is the Python entry point; heavy modules load on first use so
``import metadip`` stays fast.
"""

__version__ = "0.1.0"
__all__ = ["__version__", "reconstruct"]


def __getattr__(name):
    if name == "reconstruct":
        from metadip.api import reconstruct  # local: metadip.api imports this module (and torch)

        return reconstruct
    raise AttributeError(f"module 'metadip' has no attribute {name!r}")
