"""openvpp: operation and management platform of a city-scale virtual power plant."""

__version__ = "0.1.0"
