"""Keras on torch: eager inference under ``torch.no_grad``; autodiff by ``torch.func.jacrev`` under ``vmap``."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import numpy as np

from aebench.backends.base import Backend, Forward

if TYPE_CHECKING:
    import keras
    import torch


class TorchBackend(Backend):
    name = "torch"
    extra = "torch"

    def _set_threads(self, threads: int) -> dict[str, Any]:
        import torch

        torch.set_num_threads(threads)
        try:
            torch.set_num_interop_threads(threads)  # as on TensorFlow: no more than the pinned cores
        except RuntimeError:
            pass  # torch allows it once, before any parallel work; the count in use is recorded below
        return {"intra_op_threads": torch.get_num_threads(), "inter_op_threads": torch.get_num_interop_threads()}

    def place(self, device: str) -> None:
        """cpu: Keras on torch keeps its tensors on the CPU (it picks CUDA at import when a GPU is present)."""
        if device == "cpu":
            import keras

            self._placement.enter_context(keras.device("cpu"))
            return
        super().place(device)

    def find_accelerators(self, kind: str) -> tuple[list[str], str | None]:
        import torch

        if kind == "tpu":
            return [], "aebench runs torch on CPUs and CUDA GPUs only (torch_xla is not supported)"
        if torch.cuda.is_available():
            return [f"cuda:{i} {torch.cuda.get_device_name(i)}" for i in range(torch.cuda.device_count())], None
        if torch.version.cuda is None:
            return [], f"this torch {torch.__version__} build has no CUDA support (CPU wheel)"
        return [], "torch.cuda found no GPU (no NVIDIA driver, or CUDA_VISIBLE_DEVICES hides it)"

    def device_description(self, device: str) -> str:
        import torch

        if device == "gpu" and torch.cuda.is_available():
            return f"cuda:0 {torch.cuda.get_device_name(0)}"
        return "cpu"

    def compiled_forward(self, model: keras.Model) -> Forward:
        import torch

        device = _weights_torch_device(model)

        def run(x: Any) -> Any:
            with torch.no_grad():
                out = model(x, training=False)
            self.wait(out)
            return out

        return Forward("torch.no_grad (eager)", lambda a: torch.as_tensor(a, device=device), run,
                       lambda t: t.detach().float().cpu().numpy())  # numpy has no bfloat16: widen first

    def wait(self, value: Any) -> None:
        import torch

        if value.device.type == "cuda":
            torch.cuda.synchronize(value.device)

    def jacobian_frobenius_sq(self, encoder: keras.Model, images: np.ndarray) -> np.ndarray:
        import torch

        x = torch.as_tensor(np.asarray(images, dtype=np.float32), device=_weights_torch_device(encoder))

        def code_of_one(image: torch.Tensor) -> torch.Tensor:
            return encoder(image[None], training=False)[0]

        jacobian = torch.func.vmap(torch.func.jacrev(code_of_one))(x)
        return jacobian.reshape(len(images), -1).square().sum(dim=1).detach().float().cpu().numpy()


def _weights_torch_device(model: keras.Model) -> torch.device:
    import torch

    return next((v.value.device for v in model.weights), torch.device("cpu"))
