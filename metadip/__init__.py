"""metadip: meta-learned fast initialisations for Deep Image Prior."""

__version__ = "0.1.0"
