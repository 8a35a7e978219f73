"""Does a sharp layer's surrogate gradient help or hurt while the layers above sharpen?

The original Whetstone recipe (784-256-64-100, N-hot key, Adadelta 4.0,
``SimpleSharpener(5, 5)``) trained with ``surrogate_width=0`` (no gradient through a
sharp layer: the original semantics) or 1 (the default: lower layers keep training),
and optionally honed (``hone_epochs`` at Adadelta 0.4).

    python -m benchmarks.sharpening_gradient WIDTH SEED HONE_EPOCHS   # prints one line

Results of the runs made so far: ``results/sharpening_gradient.json``.
"""

from __future__ import annotations

import os
import sys

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")


def run(width: float, seed: int, hone: int, data_dir: str = "../shared/data") -> float:
    """Test accuracy of one training run."""
    import keras

    import whetstone as ws

    (x, y), (x_test, y_test) = ws.datasets.load("mnist", data_dir)
    keras.utils.set_random_seed(seed)
    key = ws.encoding.key_generator(10, 100, seed=0)
    layers = [keras.Input((28, 28)), keras.layers.Flatten()]
    for units in (256, 64, 100):
        layers += [keras.layers.Dense(units), ws.layers.SpikingBRelu(surrogate_width=width)]
    model = keras.Sequential([*layers, ws.layers.SoftmaxDecode(key)])
    model.compile(keras.optimizers.Adadelta(4.0), "categorical_crossentropy")
    sharpener = ws.callbacks.SimpleSharpener(
        start_epoch=5, steps=5, stop_when_sharp=True, verbose=0,
        hone_epochs=hone, hone_learning_rate=0.4 if hone else None,
    )  # fmt: skip
    model.fit(x, keras.utils.to_categorical(y, 10), epochs=30, batch_size=128,
              callbacks=[sharpener], verbose=0)  # fmt: skip
    return float((model.predict(x_test, verbose=0).argmax(axis=1) == y_test).mean())


if __name__ == "__main__":
    width, seed, hone = float(sys.argv[1]), int(sys.argv[2]), int(sys.argv[3])
    print("width", width, "seed", seed, "hone", hone, run(width, seed, hone))
