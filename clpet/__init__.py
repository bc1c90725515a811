"""clpet — continual learning with parameter-efficient tuning of pre-trained models.

Importing ``clpet`` is cheap; ``clpet.registry`` holds the registries that the submodules fill on import.
"""
__version__ = "0.1.0"
