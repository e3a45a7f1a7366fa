"""quantum_adapters: quantum tensor hybrid adapters (QTHA) for Hugging Face causal LMs.

Importing this package registers the ``qtha`` method with PEFT, so ``get_peft_model(model,
QTHAConfig(...))`` and ``PeftModel.from_pretrained`` work as they do for LoRA.
"""

from .config import QTHAConfig, default_bottleneck
from .layer import NotMergeableError, QTHALinear
from .model import QTHAModel

__all__ = ["NotMergeableError", "QTHAConfig", "QTHALinear", "QTHAModel", "default_bottleneck"]
