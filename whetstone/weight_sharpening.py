"""Weight sharpening: train a model's weights onto the grid a target chip stores.

Sharpening turns each activation into the chip's step function gradually, so the network
learns to live with it. :class:`WeightSharpener` does the same for the weights. Every
on-chip Dense/Conv layer keeps float *latent* weights ``w``; the model computes with

    w_a = (1 - a) w + a q(w)        (the same for the bias)

where ``q`` moves a stage onto the target's grid (``whetstone.quantize``) and the
weight sharpness ``a`` goes from 0 to 1 in ``steps`` steps, like an activation's. After
every batch the optimizer's change to ``w_a`` is added to ``w`` (a straight-through
estimator: the gradient at the blended weights trains the latent ones) and ``w_a`` is
recomputed. From ``a = 1`` on the model's weights *are* ``q(w)``: exactly on the grid
after every batch, so honing (see ``whetstone.callbacks``) trains on the grid, and
converting for the target changes no weight.

Run it together with a sharpener: the sharpener makes the activations steps, this
makes the weights the chip's. By default (``after_sharp=True``) weight sharpening starts
at the first epoch that begins fully sharp, so it shares the sharpener's honing epochs.
Fold BatchNormalization first (``whetstone.quantize.fold_batch_norm``): the grid is on
the trained weights.

Example:
    >>> import keras, numpy as np, whetstone as ws
    >>> model = keras.Sequential([keras.Input((4,)), keras.layers.Dense(8),
    ...     ws.layers.SpikingBRelu(sharpness=1.0, name="h"), keras.layers.Dense(3, name="d"),
    ...     ws.layers.SpikingBRelu(sharpness=1.0)])
    >>> model.compile("adam", "mse")
    >>> x, y = np.ones((8, 4)), np.zeros((8, 3))
    >>> on_grid = WeightSharpener("bits=4", steps=2, verbose=0)
    >>> history = model.fit(x, y, epochs=3, callbacks=[on_grid], verbose=0)
    >>> history.history["weight_sharpness"]
    [0.5, 1.0, 1.0]
    >>> kernel = model.get_layer("d").kernel.numpy()
    >>> step = ws.quantize.Bits(4).step(kernel)
    >>> bool(np.array_equal(np.round(kernel / step) * step, kernel))
    True
"""

from __future__ import annotations

from dataclasses import replace

import keras
import numpy as np

from whetstone import quantize
from whetstone.convert import ConversionError, layer_chain, to_spiking
from whetstone.sharpness import is_fully_sharpened

__all__ = ["WeightSharpener"]


class WeightSharpener(keras.callbacks.Callback):
    """Blend the on-chip layers' weights onto ``target``'s grid, then keep them there.

    Args:
        target: ``"loihi"``, ``"spinnaker"``, ``"bits=n"`` or a ``whetstone.quantize``
            format (e.g. ``quantize.Loihi(block_shapes=...)``).
        steps: steps from weight sharpness 0 to 1 (``a = i / steps``).
        per: ``"epoch"`` (a step at the end of every epoch) or ``"batch"``.
        after_sharp: start at the first epoch that begins with every spiking layer
            fully sharp; False starts at ``start_epoch``.
        start_epoch: first epoch (0-based) that blends, when ``after_sharp`` is False.
        input_encoding: as the model will be converted (``"host"``: the first stage
            stays in float on the host and is not quantised).
        verbose: 1 prints a line when the weights reach the grid.

    After every epoch ``logs["weight_sharpness"]`` holds ``a``.
    """

    def __init__(
        self,
        target: str | quantize.Format = "loihi",
        steps: int = 2,
        per: str = "epoch",
        after_sharp: bool = True,
        start_epoch: int = 0,
        input_encoding: str = "host",
        verbose: int = 1,
    ):
        super().__init__()
        self.format = quantize.get(target)
        if not isinstance(steps, int) or steps < 1:
            raise ValueError(f"steps must be a positive integer, got {steps!r}.")
        if per not in ("epoch", "batch"):
            raise ValueError(f"per must be 'epoch' or 'batch', got {per!r}.")
        if not isinstance(start_epoch, int) or start_epoch < 0:
            raise ValueError(f"start_epoch must be an integer >= 0, got {start_epoch!r}.")
        self.steps, self.per = steps, per
        self.after_sharp, self.start_epoch = after_sharp, start_epoch
        self.input_encoding, self.verbose = input_encoding, verbose
        self.done = 0
        self.started = False

    @property
    def sharpness(self) -> float:
        """The weight sharpness ``a`` in [0, 1]."""
        return self.done / self.steps

    # -- the layers and their grid -------------------------------------------------
    def on_train_begin(self, logs=None):
        self._sync()
        net = to_spiking(self.model, self.input_encoding, require_sharp=False)
        layers = {layer.name: layer for layer in layer_chain(self.model)}
        self.contexts = self.format.contexts(net)
        self.stages, self.layers, self.latent, self.assigned = {}, {}, {}, {}
        for stage in net.stages:
            if stage.name not in self.contexts:
                continue
            layer = layers[stage.name]
            _check_layer(layer, stage)
            self.stages[stage.name], self.layers[stage.name] = stage, layer
        if not self.stages:
            raise ValueError(
                f"WeightSharpener({self.format.name!r}): the model has no on-chip Dense/Conv "
                "layer to sharpen (with input_encoding='host' the first one stays on the host)."
            )
        if not quantize.off_grid(net, self.format):  # resumed on the grid: keep it there
            self.done = self.steps

    def _sync(self) -> None:
        sync = getattr(self.model, "jax_state_sync", None)
        if sync is not None:  # JAX keeps variables in a state pytree during fit
            sync()

    def _read(self, name: str) -> tuple[np.ndarray, np.ndarray]:
        layer = self.layers[name]
        kernel = keras.ops.convert_to_numpy(layer.kernel).astype(np.float64)
        return kernel, keras.ops.convert_to_numpy(layer.bias).astype(np.float64)

    def blended(self, name: str, latent: tuple[np.ndarray, np.ndarray]) -> tuple:
        """``(1 - a) w + a q(w)`` of one layer's latent kernel and bias (float32)."""
        stage = replace(self.stages[name], weights=latent[0].astype(np.float32),
                        bias=latent[1].astype(np.float32))  # fmt: skip
        on_grid = self.format.grid(stage, **self.contexts[name])
        if self.done >= self.steps:
            return on_grid
        a = self.sharpness
        return tuple(
            ((1 - a) * w + a * q.astype(np.float64)).astype(np.float32)
            for w, q in zip(latent, on_grid, strict=True)
        )

    def project(self) -> None:
        """Fold the optimizer's last change into the latent weights; write the blend."""
        self._sync()
        for name, layer in self.layers.items():
            now = self._read(name)
            if name in self.assigned:  # w += what the optimizer did to the assigned weights
                latent = tuple(
                    w + (n - a)
                    for w, n, a in zip(self.latent[name], now, self.assigned[name], strict=True)
                )
            else:
                latent = now
            kernel, bias = self.blended(name, latent)
            layer.kernel.assign(kernel)
            layer.bias.assign(bias)
            self.latent[name] = latent
            self.assigned[name] = (kernel.astype(np.float64), bias.astype(np.float64))

    # -- schedule ---------------------------------------------------------------
    def on_epoch_begin(self, epoch, logs=None):
        if not self.started:
            sharp = is_fully_sharpened(self.model) if self.after_sharp else True
            self.started = sharp and (self.after_sharp or epoch >= self.start_epoch)
        if self.started and self.done >= self.steps:
            self.project()  # on the grid from the first batch (e.g. resumed or stepped at 1)

    def _step(self) -> None:
        if self.started and self.done < self.steps:
            self.done += 1
            if self.done == self.steps and self.verbose:
                print(f"\nWeightSharpener: weights on the {self.format.name} grid.")

    def on_train_batch_end(self, batch, logs=None):
        if self.per == "batch":
            self._step()
        if self.started:
            self.project()

    def on_epoch_end(self, epoch, logs=None):
        if self.per == "epoch":
            self._step()
            if self.started:
                self.project()
        if logs is not None:
            logs["weight_sharpness"] = self.sharpness

    def on_train_end(self, logs=None):
        if self.verbose and self.done < self.steps:
            state = "never started" if not self.started else f"reached {self.sharpness:.3g}"
            print(
                f"WeightSharpener: training ended before the weights were on the "
                f"{self.format.name} grid (weight sharpness {state}); train more epochs "
                "(fit with initial_epoch resumes), or use fewer steps."
            )


def _check_layer(layer, stage) -> None:
    """The layer's kernel must be the stage's weights (no folding between them)."""
    if isinstance(layer, keras.layers.BatchNormalization) or not hasattr(layer, "kernel"):
        raise ConversionError(f"stage {stage.name!r} does not come from a Dense/Conv layer.")
    if tuple(layer.kernel.shape) != stage.weights.shape or layer.bias is None:
        raise ConversionError(
            f"layer {layer.name!r}: its kernel {tuple(layer.kernel.shape)} is not the stage's "
            f"weights {stage.weights.shape} (something folds into it), or it has no bias. "
            "Weight sharpening trains the weights the chip stores: fold BatchNormalization "
            "first (whetstone.quantize.fold_batch_norm), avoid average pooling before a "
            "Dense/Conv layer, and build Dense/Conv layers with use_bias=True."
        )
    kernel = keras.ops.convert_to_numpy(layer.kernel)
    if not np.array_equal(kernel, stage.weights):
        raise ConversionError(
            f"layer {layer.name!r}: the converted stage's weights differ from its kernel "
            "(a BatchNormalization folds into it); fold it first with "
            "whetstone.quantize.fold_batch_norm(model) and compile the copy."
        )
