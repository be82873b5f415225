"""Backend-portability helper, run as ``KERAS_BACKEND=<name> python tests/backend_step.py [precision ...]``.

KERAS_BACKEND is read when Keras is imported, so each backend needs a process of its own: tests/test_backends.py
starts one per backend and compares their answers. For every zoo variant (and each precision given, float32 by
default) this builds the model, trains one step on 16 random images and runs it once, and for the contractive variant
measures its Jacobian penalty by the backend's autodiff beside the closed form; it prints one JSON object:
{"backend": ..., "results": {"<variant>/<precision>": {"loss": float, "shape": [...], "finite": bool[, "jacobian":
{"diag.jacobian_fro_sq_autodiff": float, "diag.jacobian_fro_sq_closed_form": float}]} or {"error": "..."}}}.
"""

from __future__ import annotations

import json
import sys


def main(precisions: list[str]) -> None:
    import keras
    import numpy as np

    from aebench import accuracy, backends, models, scenarios

    images = np.random.default_rng(0).random((16, 28, 28, 1), dtype=np.float32)
    backend = backends.current()
    results = {}
    for precision in precisions:
        backend.set_precision(precision)
        for variant in models.VARIANTS:
            try:
                model = models.build_autoencoder(variant, seed=0)
                scenarios.compile_autoencoder(model, learning_rate=1e-3, jit_compile=False)
                loss = float(np.asarray(model.train_on_batch(images, images)).reshape(-1)[0])
                output = backend.compiled_forward(model).predict(images, batch_size=16)
                jacobian = accuracy.contractive_jacobian_check(model, images[:4]) if variant == "contractive" else None
            except Exception as error:  # noqa: BLE001 - one broken variant must not hide the others' answers
                results[f"{variant}/{precision}"] = {"error": f"{type(error).__name__}: {error}"[:500]}
                continue
            results[f"{variant}/{precision}"] = {
                "loss": loss,
                "shape": list(output.shape),
                "finite": bool(np.isfinite(loss) and np.isfinite(output).all()),
                **({"jacobian": jacobian} if jacobian else {}),
            }
    print(json.dumps({"backend": keras.backend.backend(), "results": results}))


if __name__ == "__main__":
    main(sys.argv[1:] or ["float32"])
