"""kubemam: a Kubernetes operator for a declarative broadcast and OTT media supply chain."""

__version__ = "0.1.0"
