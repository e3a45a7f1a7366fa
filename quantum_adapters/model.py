"""PEFT integration: ``get_peft_model(model, QTHAConfig(...))`` injects QTHA layers.

``QTHAModel`` follows PEFT's tuner layout (config + layer + injecting model): it finds the target
``nn.Linear`` modules, wraps each in :class:`QTHALinear`, and leaves everything else (saving, loading,
several named adapters, ``set_adapter``, ``disable_adapter``) to PEFT's generic machinery.
"""

from __future__ import annotations

import zlib
from collections.abc import Iterator
from contextlib import contextmanager
from functools import partial
from typing import Any

from peft.mapping import PEFT_TYPE_TO_PREFIX_MAPPING
from peft.tuners.tuners_utils import BaseTuner, BaseTunerLayer
from peft.utils import register_peft_method
from torch import nn

from ._peft_type import QTHA_PEFT_TYPE
from .config import DEFAULT_TARGET_MODULES, QTHAConfig
from .layer import NotMergeableError, QTHALayer, QTHALinear, merge_message

__all__ = ["QTHAModel"]


class QTHAModel(BaseTuner):
    """Injects quantum tensor hybrid adapters into a transformers model (see :mod:`quantum_adapters.layer`)."""

    prefix: str = "qtha_"
    tuner_layer_cls = QTHALayer
    target_module_mapping = {
        arch: list(DEFAULT_TARGET_MODULES)
        for arch in ("llama", "qwen2", "qwen3", "mistral", "gemma", "gemma2", "phi3")
    }

    def _create_and_replace(
        self,
        config: QTHAConfig,
        adapter_name: str,
        target: nn.Module,
        target_name: str,
        parent: nn.Module,
        current_key: str,
        **optional_kwargs: Any,
    ) -> None:
        if current_key is None:
            raise ValueError("QTHAModel: current_key must not be None")
        if config.init_seed is not None:
            # each module gets its own, reproducible stream
            config = _with_seed(config, config.init_seed + zlib.crc32(current_key.encode()) % 100_003)
        if isinstance(target, QTHALayer):
            target.update_layer(adapter_name, config)
            return
        base = target.get_base_layer() if isinstance(target, BaseTunerLayer) else target
        if not isinstance(base, nn.Linear):
            raise TypeError(
                f"QTHA target module {current_key!r} is a {type(base).__name__}; only nn.Linear layers "
                "can be adapted"
            )
        new_module = QTHALinear(target, adapter_name, config)
        if adapter_name not in self.active_adapters:
            new_module.requires_grad_(False)  # an added, inactive adapter is not trainable
        self._replace_module(parent, target_name, new_module, target)

    def _prepare_adapter_config(self, peft_config: QTHAConfig, model_config: dict) -> QTHAConfig:
        config = super()._prepare_adapter_config(peft_config, model_config)
        targets = config.target_modules
        if isinstance(targets, (set, list, tuple)):
            linear = sorted(
                {n.rsplit(".", 1)[-1] for n, m in self.model.named_modules() if isinstance(m, nn.Linear)}
            )
            names = [n for n, _ in self.model.named_modules()]
            missing = [t for t in sorted(targets) if not any(n == t or n.endswith("." + t) for n in names)]
            if missing:
                raise ValueError(
                    f"QTHAConfig.target_modules: {', '.join(missing)} not found in the model; "
                    f"its linear layers are: {', '.join(linear)}"
                )
        return config

    def _check_merge_allowed(self) -> None:
        raise NotMergeableError(merge_message([c.variant for c in self.peft_config.values()]))

    @contextmanager
    def _enable_peft_forward_hooks(self, *args: Any, **kwargs: Any) -> Iterator[None]:
        """PEFT's mixed-batch convention: ``model(..., adapter_names=[...])``, one name per row and
        ``"__base__"`` for the base model, reaches every QTHA layer's forward (through a pre-forward hook,
        as PEFT's LoRA does), where :meth:`QTHALinear._mixed_batch_forward` groups the rows by adapter."""
        adapter_names = kwargs.pop("adapter_names", None)
        if adapter_names is None:
            yield
            return
        if self.training:
            raise ValueError(
                "adapter_names: mixed-adapter batches are for inference; call model.eval() first"
            )
        layers = [m for m in self.model.modules() if isinstance(m, QTHALayer)]
        known = set().union(*(layer.qtha_w_a.keys() for layer in layers))
        unknown = sorted({n for n in adapter_names if n != "__base__"} - known)
        if unknown:
            raise ValueError(
                f"adapter_names: unknown adapter(s) {', '.join(unknown)}; loaded: {', '.join(sorted(known))}"
            )
        hook = partial(_inject_adapter_names, adapter_names=list(adapter_names))
        handles = [layer.register_forward_pre_hook(hook, with_kwargs=True) for layer in layers]
        try:
            yield
        finally:
            for handle in handles:
                handle.remove()


def _inject_adapter_names(module: nn.Module, args: tuple, kwargs: dict, adapter_names: list[str]):
    kwargs["adapter_names"] = adapter_names
    return args, kwargs


def _with_seed(config: QTHAConfig, seed: int) -> QTHAConfig:
    import copy

    clone = copy.copy(config)
    clone.init_seed = seed
    return clone


if QTHA_PEFT_TYPE not in PEFT_TYPE_TO_PREFIX_MAPPING:
    register_peft_method(name="qtha", config_cls=QTHAConfig, model_cls=QTHAModel)
