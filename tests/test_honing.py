"""Honing on real images: the network stays exactly the spiking network Keras computes."""

import keras
import numpy as np

import whetstone as ws


def test_honed_model_is_binary_and_the_reference_simulator_equals_keras():
    (x, y), (x_test, y_test) = ws.datasets.load("demo")
    keras.utils.set_random_seed(0)
    model = ws.models.dense_mnist(head="readout", hidden=(64, 32))
    model.compile(keras.optimizers.Adam(1e-3), "categorical_crossentropy")
    sharpener = ws.callbacks.SimpleSharpener(
        start_epoch=0, steps=1, stop_when_sharp=True, hone_epochs=2, hone_learning_rate=1e-4,
        verbose=0,
    )  # fmt: skip
    history = model.fit(x, keras.utils.to_categorical(y, 10), epochs=10, batch_size=128,
                        callbacks=[sharpener], verbose=0)  # fmt: skip
    assert history.history["honing"] == [0.0, 0.0, 1.0, 1.0]
    assert float(model.optimizer.learning_rate) == np.float32(1e-4)

    hidden = keras.Model(model.inputs, model.get_layer("spiking_2").output)
    assert set(np.unique(hidden.predict(x_test, verbose=0))) == {0.0, 1.0}
    keras_classes = model.predict(x_test, verbose=0).argmax(axis=1)
    result = ws.simulate.run(ws.convert.to_spiking(model), x_test)
    assert (result.predictions == keras_classes).all()
    assert (result.predictions == y_test).mean() > 0.8
