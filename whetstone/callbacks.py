"""Sharpener callbacks: add one to ``model.fit`` and the spiking layers become step functions.

Every sharpener raises the sharpness of the model's spiking layers during training,
either *bottom-up* (one layer at a time, starting at the input, so the layers above
adapt to each sharpened layer) or *uniformly* (all layers together). Sharpness only
ever grows, ends at exactly 1.0, and is read back from the model when training
starts, so a run resumed from a saved model continues where it stopped.

Once every layer is sharp, training may go on: this is *honing*. The forward pass is
then exactly the spiking network's and the gradient comes from each layer's surrogate
(see ``whetstone.layers``), so the layers learn to live with their steps. A sharpener
can switch the learning rate when honing starts (``hone_learning_rate``), anneal it over
the honing epochs (``hone_schedule="cosine"``) and, with ``stop_when_sharp``, ends
training ``hone_epochs`` epochs after the model became sharp.

After every epoch the current sharpness goes into ``logs`` (``sharpness`` for the
model's mean, ``sharpness_<layer name>`` per layer and ``honing``, 1 in an epoch that
began fully sharp), so ``History``, ``CSVLogger`` and ``TensorBoard`` record it.

Example:
    >>> import keras, numpy as np, whetstone as ws
    >>> model = keras.Sequential([keras.Input((4,)), keras.layers.Dense(8),
    ...     ws.layers.SpikingBRelu(name="h"), keras.layers.Dense(2),
    ...     ws.layers.SpikingBRelu(name="o")])
    >>> model.compile("adam", "mse")
    >>> x, y = np.zeros((8, 4)), np.zeros((8, 2))
    >>> sharpener = ws.callbacks.SimpleSharpener(start_epoch=1, steps=2, verbose=0)
    >>> history = model.fit(x, y, epochs=5, callbacks=[sharpener], verbose=0)
    >>> history.history["sharpness_h"], history.history["sharpness_o"]
    ([0.0, 0.5, 1.0, 1.0, 1.0], [0.0, 0.0, 0.0, 0.5, 1.0])
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Sequence

import keras

from whetstone.sharpness import require_spiking_layers

__all__ = ["AdaptiveSharpener", "ScheduledSharpener", "Sharpener", "SimpleSharpener"]


class Sharpener(keras.callbacks.Callback):
    """Base class: owns the spiking layers' sharpness and reports it.

    Subclasses decide *when* to sharpen by calling ``self.apply(values)`` (one target
    per spiking layer, bottom-up) from Keras's hooks; the base class never lowers a
    layer's sharpness, writes only changed values, logs, and stops training once all
    layers are sharp if ``stop_when_sharp``.

    Args:
        bottom_up: sharpen one layer at a time from the input (True) or all together.
        stop_when_sharp: end training once the model is fully sharp and honed: at the
            end of the ``hone_epochs``-th epoch after the one in which the last layer
            reached sharpness 1 (``hone_epochs=0``: at the end of that epoch).
        hone_epochs: epochs of honing before ``stop_when_sharp`` ends training.
        hone_learning_rate: learning rate set on the optimizer when the model becomes
            fully sharp (None keeps it).
        hone_schedule: ``"constant"`` keeps ``hone_learning_rate`` while honing;
            ``"cosine"`` anneals it, epoch by epoch, to
            ``r_e = hone_learning_rate * (1 + cos(pi * e / hone_epochs)) / 2`` in honing
            epoch ``e = 0 .. hone_epochs - 1`` (the last ``e`` holds beyond), so the
            weights settle where the noise of the step network's gradient averages out.
        verbose: 1 prints a line when a layer becomes fully sharp; 0 is silent.
    """

    def __init__(
        self,
        bottom_up: bool = True,
        stop_when_sharp: bool = False,
        verbose: int = 1,
        hone_epochs: int = 0,
        hone_learning_rate: float | None = None,
        hone_schedule: str = "constant",
    ):
        super().__init__()
        if not isinstance(hone_epochs, int) or hone_epochs < 0:
            raise ValueError(f"hone_epochs must be an integer >= 0, got {hone_epochs!r}.")
        _check_hone_schedule(hone_schedule, hone_epochs, hone_learning_rate)
        if hone_learning_rate is not None and not (
            math.isfinite(hone_learning_rate) and hone_learning_rate > 0
        ):
            raise ValueError(
                f"hone_learning_rate must be a positive number or None, got {hone_learning_rate}."
            )
        self.bottom_up = bottom_up
        self.stop_when_sharp = stop_when_sharp
        self.hone_epochs = hone_epochs
        self.hone_learning_rate = hone_learning_rate
        self.hone_schedule = hone_schedule
        self.verbose = verbose
        self.layers: list = []
        self.values: list[float] = []
        self.sharp_epoch: int | None = None

    # -- state ---------------------------------------------------------------
    def on_train_begin(self, logs=None):
        self.layers = require_spiking_layers(self.model)
        self.values = [layer.get_sharpness() for layer in self.layers]
        self._epoch = 0
        self.sharp_epoch = None
        self._resumed_sharp = self.fully_sharp  # every epoch of this run hones
        if self.hone_learning_rate is not None:
            _check_settable_learning_rate(self.model)
            if self.fully_sharp:
                self._set_learning_rate(self.hone_learning_rate)

    def on_epoch_begin(self, epoch, logs=None):
        self._epoch = epoch
        if self._resumed_sharp and self.sharp_epoch is None:
            self.sharp_epoch = epoch - 1
        if self.hone_schedule == "cosine" and self.honed_epochs >= 1:
            self._set_learning_rate(self.honing_rate(self.honed_epochs - 1))

    def honing_rate(self, e: int) -> float:
        """The learning rate of honing epoch ``e`` (0-based) under ``hone_schedule``.

        Example:
            >>> s = Sharpener(hone_epochs=4, hone_learning_rate=1e-3, hone_schedule="cosine")
            >>> [round(s.honing_rate(e), 7) for e in range(5)]
            [0.001, 0.0008536, 0.0005, 0.0001464, 0.0001464]
        """
        if self.hone_schedule == "constant":
            return self.hone_learning_rate
        e = min(e, self.hone_epochs - 1)
        return self.hone_learning_rate * (1 + math.cos(math.pi * e / self.hone_epochs)) / 2

    @property
    def fully_sharp(self) -> bool:
        return all(value == 1.0 for value in self.values)

    @property
    def honed_epochs(self) -> int:
        """Whole epochs trained since the model became fully sharp."""
        return 0 if self.sharp_epoch is None else max(self._epoch - self.sharp_epoch, 0)

    def _set_learning_rate(self, value: float) -> None:
        sync = getattr(self.model, "jax_state_sync", None)
        if sync is not None:
            sync()
        self.model.optimizer.learning_rate.assign(value)

    def _start_honing(self) -> None:
        self.sharp_epoch = self._epoch
        if self.hone_learning_rate is not None:
            self._set_learning_rate(self.hone_learning_rate)
        if self.verbose and (self.hone_epochs or not self.stop_when_sharp):
            print(f"{type(self).__name__}: fully sharp; honing from here on.")

    def apply(self, targets: Sequence[float]) -> None:
        """Raise each layer's sharpness to its target (never lowers it)."""
        changed = [
            (i, min(1.0, float(t))) for i, t in enumerate(targets) if min(1.0, t) > self.values[i]
        ]
        if not changed:
            return
        sync = getattr(self.model, "jax_state_sync", None)
        if sync is not None:  # JAX keeps variables in a state pytree during fit
            sync()
        for i, value in changed:
            self.layers[i].set_sharpness(value)
            self.values[i] = value
            if value == 1.0 and self.verbose:
                print(
                    f"\n{type(self).__name__}: layer {self.layers[i].name!r} is fully sharp "
                    f"(epoch {self._epoch + 1})."
                )
        if self.fully_sharp:
            self._start_honing()

    # -- reporting -----------------------------------------------------------
    def log_sharpness(self, logs) -> None:
        if logs is None:
            return
        logs["sharpness"] = sum(self.values) / len(self.values)
        for layer, value in zip(self.layers, self.values, strict=True):
            logs[f"sharpness_{layer.name}"] = value
        logs["honing"] = float(self.sharp_epoch is not None and self.sharp_epoch < self._epoch)

    def on_epoch_end(self, epoch, logs=None):
        self.log_sharpness(logs)
        if self.stop_when_sharp and self.fully_sharp and self.honed_epochs >= self.hone_epochs:
            self.model.stop_training = True

    def on_train_end(self, logs=None):
        if self.verbose and not self.fully_sharp:
            pairs = zip(self.layers, self.values, strict=True)
            table = ", ".join(f"{layer.name}={v:.3g}" for layer, v in pairs)
            print(
                f"{type(self).__name__}: training ended before the model was fully sharp "
                f"({table}); train more epochs (fit with initial_epoch resumes) before converting."
            )
        elif self.verbose and self.stop_when_sharp and self.honed_epochs < self.hone_epochs:
            print(
                f"{type(self).__name__}: training ended after {self.honed_epochs} of "
                f"{self.hone_epochs} honing epochs; the model is sharp and can be converted, "
                "or train more epochs to finish honing."
            )


def _check_settable_learning_rate(model) -> None:
    rate = getattr(getattr(model, "optimizer", None), "learning_rate", None)
    if not hasattr(rate, "assign"):
        raise ValueError(
            "hone_learning_rate needs an optimizer with a plain learning rate, but the model's "
            f"is {type(rate).__name__}; compile with a float learning rate, or leave "
            "hone_learning_rate=None and schedule the rate yourself."
        )


def _check_hone_schedule(schedule: str, epochs: int, rate: float | None) -> None:
    if schedule not in ("constant", "cosine"):
        raise ValueError(f"hone_schedule must be 'constant' or 'cosine', got {schedule!r}.")
    if schedule == "cosine" and (rate is None or epochs < 1):
        raise ValueError(
            "hone_schedule='cosine' anneals hone_learning_rate over hone_epochs: give both "
            f"(got hone_learning_rate={rate}, hone_epochs={epochs})."
        )


def _check_steps(steps: int) -> int:
    if not isinstance(steps, int) or steps < 1:
        raise ValueError(f"steps must be a positive integer, got {steps!r}.")
    return steps


class SimpleSharpener(Sharpener):
    """Sharpen each layer in a fixed number of equal steps, from ``start_epoch`` on.

    One step is taken at the end of every epoch (``per="epoch"``) or every batch
    (``per="batch"``) from epoch ``start_epoch`` (0-based) on. A layer needs ``steps``
    steps to go from 0 to 1; bottom-up the layers follow one another, so ``L`` layers
    take ``L * steps`` steps; uniformly all take ``steps``.

    Args:
        start_epoch: first epoch (0-based) at whose end (or in whose batches)
            sharpening steps are taken.
        steps: number of steps per layer (at least 1).
        per: ``"epoch"`` or ``"batch"``.

    The other arguments (``bottom_up``, ``stop_when_sharp``, ``verbose`` and the ``hone_*``
    ones) are those of ``Sharpener``.

    Example:
        >>> import whetstone as ws
        >>> sharpener = ws.callbacks.SimpleSharpener(start_epoch=5, steps=5)
        >>> sharpener.targets(done=7, num_layers=3)   # after 7 of 15 steps
        [1.0, 0.4, 0.0]
    """

    def __init__(
        self,
        start_epoch: int = 0,
        steps: int = 4,
        per: str = "epoch",
        bottom_up: bool = True,
        stop_when_sharp: bool = False,
        verbose: int = 1,
        hone_epochs: int = 0,
        hone_learning_rate: float | None = None,
        hone_schedule: str = "constant",
    ):
        super().__init__(
            bottom_up, stop_when_sharp, verbose, hone_epochs, hone_learning_rate, hone_schedule
        )
        if per not in ("epoch", "batch"):
            raise ValueError(f"per must be 'epoch' or 'batch', got {per!r}.")
        if start_epoch < 0:
            raise ValueError(f"start_epoch must be >= 0, got {start_epoch}.")
        self.start_epoch = start_epoch
        self.steps = _check_steps(steps)
        self.per = per

    def targets(self, done: int, num_layers: int) -> list[float]:
        """Per-layer sharpness after ``done`` steps."""
        if not self.bottom_up:
            return [min(done / self.steps, 1.0)] * num_layers
        return [min(max((done - i * self.steps) / self.steps, 0.0), 1.0) for i in range(num_layers)]

    def on_train_begin(self, logs=None):
        super().on_train_begin(logs)
        # Resume: count the steps the saved sharpness already represents.
        per_layer = [round(v * self.steps) for v in self.values]
        self.done = sum(per_layer) if self.bottom_up else min(per_layer)

    def _step(self) -> None:
        if self._epoch >= self.start_epoch and not self.fully_sharp:
            self.done += 1
            self.apply(self.targets(self.done, len(self.layers)))

    def on_train_batch_end(self, batch, logs=None):
        if self.per == "batch":
            self._step()

    def on_epoch_end(self, epoch, logs=None):
        if self.per == "epoch":
            self._step()
        super().on_epoch_end(epoch, logs)


Window = tuple[int, int]


class ScheduledSharpener(Sharpener):
    """Sharpen in explicit epoch windows, stepping every batch inside a window.

    A window ``(start, stop)`` sharpens during epochs ``start, ..., stop - 1``
    (0-based): the first batch of epoch ``start`` takes the first step and the last
    batch of epoch ``stop - 1`` reaches sharpness 1. Give one window per spiking
    layer, bottom-up, for bottom-up sharpening (windows must not overlap), or a
    single window for all layers together.

    Args:
        schedule: ``(start, stop)`` or a list of them, one per spiking layer.
        steps_per_epoch: batches per epoch; by default taken from ``fit``.
        stop_when_sharp, verbose, hone_epochs, hone_learning_rate, hone_schedule: see
            ``Sharpener``.

    Example:
        >>> import whetstone as ws
        >>> s = ws.callbacks.ScheduledSharpener([(1, 3), (3, 4)])
        >>> s.windows, s.bottom_up
        ([(1, 3), (3, 4)], True)
    """

    def __init__(
        self,
        schedule: Window | Sequence[Window],
        steps_per_epoch: int | None = None,
        stop_when_sharp: bool = False,
        verbose: int = 1,
        hone_epochs: int = 0,
        hone_learning_rate: float | None = None,
        hone_schedule: str = "constant",
    ):
        single = len(schedule) == 2 and all(isinstance(e, int) for e in schedule)
        super().__init__(
            not single, stop_when_sharp, verbose, hone_epochs, hone_learning_rate, hone_schedule
        )
        self.windows = [tuple(schedule)] if single else [tuple(w) for w in schedule]
        _check_windows(self.windows)
        self.steps_per_epoch = steps_per_epoch

    def on_train_begin(self, logs=None):
        super().on_train_begin(logs)
        if self.bottom_up and len(self.windows) != len(self.layers):
            names = [layer.name for layer in self.layers]
            raise ValueError(
                f"ScheduledSharpener has {len(self.windows)} windows but the model has "
                f"{len(self.layers)} spiking layers {names}: give one (start, stop) per "
                "layer, bottom-up, or a single window for all layers."
            )
        self.batches = self.steps_per_epoch or self.params.get("steps")
        if not self.batches:
            raise ValueError(
                "ScheduledSharpener steps every batch and needs the number of batches per "
                "epoch: pass steps_per_epoch to ScheduledSharpener (or to fit)."
            )

    def progress(self, window: Window, epoch: int, batches_done: int) -> float:
        """Sharpness of a layer with ``window`` after ``batches_done`` batches of ``epoch``."""
        start, stop = window
        done = (epoch - start) * self.batches + batches_done
        return min(max(done / ((stop - start) * self.batches), 0.0), 1.0)

    def on_train_batch_end(self, batch, logs=None):
        windows = self.windows if self.bottom_up else self.windows * len(self.layers)
        self.apply([self.progress(w, self._epoch, batch + 1) for w in windows])


def _check_windows(windows: list[Window]) -> None:
    for start, stop in windows:
        if not (isinstance(start, int) and isinstance(stop, int) and 0 <= start < stop):
            raise ValueError(
                f"schedule window ({start}, {stop}) is invalid: it needs integer epochs "
                "with 0 <= start < stop (sharpening runs in epochs start..stop-1)."
            )
    for (_, stop), (start, _) in itertools.pairwise(windows):
        if start < stop:
            raise ValueError(
                f"schedule windows overlap: a window starts at epoch {start} before the "
                f"previous one ends at {stop}. Bottom-up windows must follow one another, "
                "e.g. [(2, 4), (4, 6)]."
            )


class AdaptiveSharpener(Sharpener):
    """Sharpen while a monitored loss holds; pause when it degrades, resume after patience.

    After ``min_init_epochs`` of plain training, each epoch end looks at
    ``logs[monitor]``. While it stays within ``tolerance`` (a fraction) of the best
    value seen since sharpening last (re)started, the layer being sharpened (or all
    layers, if not bottom-up) gains ``rate`` sharpness, or ``slow_rate`` once at or
    above ``critical``. When the loss degrades beyond the tolerance, sharpening pauses
    for ``patience`` epochs, then resumes with the current loss as the new reference. A
    NaN or infinite loss never sharpens.

    Args:
        monitor: a key of the epoch logs, e.g. ``"loss"`` or ``"val_loss"``.
        min_init_epochs: epochs of training before the first step.
        rate, slow_rate: sharpness added per step below / at or above ``critical``.
        critical: sharpness from which ``slow_rate`` applies.
        tolerance: allowed relative increase of the loss over its best value.
        patience: epochs to pause after the loss degraded.

    The other arguments (``bottom_up``, ``stop_when_sharp``, ``verbose`` and the ``hone_*``
    ones) are those of ``Sharpener``.

    Example:
        >>> import whetstone as ws
        >>> ws.callbacks.AdaptiveSharpener(rate=0.25, slow_rate=0.125).next_value(0.75)
        0.875
    """

    def __init__(
        self,
        monitor: str = "loss",
        min_init_epochs: int = 5,
        rate: float = 0.25,
        slow_rate: float = 0.125,
        critical: float = 0.75,
        tolerance: float = 0.1,
        patience: int = 1,
        bottom_up: bool = True,
        stop_when_sharp: bool = False,
        verbose: int = 1,
        hone_epochs: int = 0,
        hone_learning_rate: float | None = None,
        hone_schedule: str = "constant",
    ):
        super().__init__(
            bottom_up, stop_when_sharp, verbose, hone_epochs, hone_learning_rate, hone_schedule
        )
        for name, value in (("rate", rate), ("slow_rate", slow_rate)):
            if not 0.0 < value <= 1.0:
                raise ValueError(f"{name} must be in (0, 1], got {value}.")
        if not 0.0 <= critical <= 1.0:
            raise ValueError(f"critical must be in [0, 1], got {critical}.")
        if tolerance < 0 or patience < 0 or min_init_epochs < 0:
            raise ValueError(
                "tolerance, patience and min_init_epochs must be >= 0, got "
                f"{tolerance}, {patience}, {min_init_epochs}."
            )
        self.monitor = monitor
        self.min_init_epochs = min_init_epochs
        self.rate, self.slow_rate, self.critical = rate, slow_rate, critical
        self.tolerance, self.patience = tolerance, patience

    def on_train_begin(self, logs=None):
        super().on_train_begin(logs)
        self.best = math.inf
        self.wait = 0  # epochs left in a pause

    def next_value(self, value: float) -> float:
        """The sharpness one step after ``value`` (snapped to 1 within 1e-6)."""
        value += self.slow_rate if value >= self.critical else self.rate
        return 1.0 if value > 1.0 - 1e-6 else value

    def _step(self) -> None:
        if self.bottom_up:
            i = next(i for i, v in enumerate(self.values) if v < 1.0)
            targets = list(self.values)
            targets[i] = self.next_value(self.values[i])
        else:
            targets = [self.next_value(min(self.values))] * len(self.values)
        self.apply(targets)

    def on_epoch_end(self, epoch, logs=None):
        loss = (logs or {}).get(self.monitor)
        if loss is None:
            raise ValueError(
                f"AdaptiveSharpener monitors {self.monitor!r}, which is not in the epoch "
                f"logs {sorted(logs or {})}. Choose one of those (for 'val_loss', pass "
                "validation data to fit)."
            )
        if not math.isfinite(float(loss)):
            if self.verbose:
                print(f"AdaptiveSharpener: {self.monitor} is {loss}; not sharpening this epoch.")
        elif epoch >= self.min_init_epochs and not self.fully_sharp:
            self._update(float(loss))
        else:
            self.best = min(self.best, float(loss))
        super().on_epoch_end(epoch, logs)

    def _update(self, loss: float) -> None:
        if self.wait > 0:  # paused
            self.wait -= 1
            if self.wait == 0:
                self.best = loss
                self._step()
        elif loss > self.best + self.tolerance * abs(self.best):
            self.wait = self.patience
            if self.wait == 0:
                self.best = loss
                self._step()
        else:
            self.best = min(self.best, loss)
            self._step()
