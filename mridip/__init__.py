"""mridip: dynamic MRI reconstruction with deep image priors, from ISMRMRD raw data."""

__version__ = "0.1.0"
