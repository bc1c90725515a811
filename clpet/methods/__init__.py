"""Method plugins, one file per family; importing this package registers all of them."""
from clpet.methods.base import Method, MethodConfig
from clpet.methods import adam, conpet, cpe_clip, finetune, ilora, lae, lm_baselines, migu, olora, osft, simplecil, unlearning  # noqa: F401  (registration)

__all__ = ["Method", "MethodConfig"]
