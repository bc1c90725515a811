"""Parameter-efficient tuning modules (Adapter, LoRA, Prefix, prompts, SSF) and named PET sets."""
