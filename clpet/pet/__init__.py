"""Parameter-efficient tuning: Adapter, LoRA, Prefix, VPT prompts and SSF on timm ViTs, Hugging Face BERT-style
encoders and timm CNNs, as named PET sets on one backbone.

>>> pets = PetManager(backbone)                       # freezes the backbone
>>> pets.add_set("online", AdapterConfig.lae())       # LAE adapter on blocks 0-4
>>> pets.set_active("online")                         # forward pass + requires_grad
>>> pets.copy_set("online", "offline"); pets.freeze("offline")
>>> pets.ema_update("offline", "online", 0.9999)      # after every optimizer step
>>> with pets.use("offline"): feats = backbone.features(batch)

Importing this package registers every kind in ``clpet.registry.PETS``: ``adapter``, ``lora``, ``prefix``,
``vpt``, ``ssf``.
"""
from clpet.pet import adapter, lora, prefix, prompt, ssf  # noqa: F401  (registers the kinds)
from clpet.pet.base import Attach, PetKind
from clpet.pet.config import (AdapterConfig, LoRAConfig, PetConfig, PrefixConfig, SSFConfig, VPTConfig,
                              pet_config)
from clpet.pet.model import PetManager
from clpet.pet.ops import prefix_attention
from clpet.pet.sites import Structure, find_structure, site_names
from clpet.registry import PETS

__all__ = [
    "PETS", "AdapterConfig", "Attach", "LoRAConfig", "PetConfig", "PetKind", "PetManager", "PrefixConfig",
    "SSFConfig", "Structure", "VPTConfig", "find_structure", "pet_config", "prefix_attention", "site_names",
]
