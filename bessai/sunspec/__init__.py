"""SunSpec devices: model layouts from pysunspec2, discovery of a device's model chain, and the
profile generator (``bessai profile discover``). See docs/sunspec.md."""

from bessai.sunspec.discover import Discovery, DiscoveryError, discover
from bessai.sunspec.generate import DispatchScale, GenerateError, ModelInstance, generate
from bessai.sunspec.models import UnknownModel, model_def

__all__ = [
    "Discovery",
    "DiscoveryError",
    "DispatchScale",
    "GenerateError",
    "ModelInstance",
    "UnknownModel",
    "discover",
    "generate",
    "model_def",
]
