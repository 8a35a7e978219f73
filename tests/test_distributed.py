"""Multi-device training with a sharpener: JAX DataParallel, tf.distribute strategies.

Each test trains a tiny model in a fresh Python (the device count is fixed when JAX or
TensorFlow starts) and checks that the sharpener's schedule reached every replica: all
copies of each sharpness variable hold the same value, and the model ends fully sharp.
"""

import json
import os
import socket
import subprocess
import sys
import textwrap
from importlib.util import find_spec

import pytest

TRAIN = textwrap.dedent("""
    import json, numpy as np, keras, whetstone as ws

    def train(scope=None):
        keras.utils.set_random_seed(0)
        rng = np.random.default_rng(0)
        x = rng.uniform(0, 1, (64, 8)).astype("float32")
        y = keras.utils.to_categorical((x.sum(axis=1) > 4).astype(int), 2)
        def build():
            model = keras.Sequential([
                keras.Input((8,)), keras.layers.Dense(16), ws.layers.SpikingBRelu(),
                keras.layers.Dense(2), ws.layers.SpikingSigmoid(),
            ])
            model.compile(keras.optimizers.Adam(1e-2), "mse")
            return model
        if scope is None:
            model = build()
        else:
            with scope:
                model = build()
        sharpener = ws.callbacks.SimpleSharpener(start_epoch=1, steps=2, stop_when_sharp=True)
        model.fit(x, y, batch_size=16, epochs=8, callbacks=[sharpener], verbose=0)
        return model
""")


def run_script(code: str, env: dict, python: str = sys.executable, timeout: int = 900):
    """Run ``code`` in a fresh Python; its last stdout line is a JSON report."""
    done = subprocess.run(
        [python, "-c", TRAIN + textwrap.dedent(code)],
        capture_output=True,
        text=True,
        timeout=timeout,
        env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3", **env},
    )
    assert done.returncode == 0, done.stderr[-3000:]
    return json.loads(done.stdout.strip().splitlines()[-1])


@pytest.mark.skipif(find_spec("jax") is None, reason="needs JAX (the .venv-backends env)")
def test_jax_data_parallel_on_two_host_devices():
    report = run_script(
        """
        import jax
        devices = jax.devices()
        keras.distribution.set_distribution(keras.distribution.DataParallel(devices=devices))
        model = train()
        replicas = {
            layer.name: sorted({float(shard.data) for shard in
                                layer.sharpness.value.addressable_shards})
            for layer in ws.sharpness.spiking_layers(model)
        }
        print(json.dumps({"devices": len(devices), "replicas": replicas,
                          "sharp": ws.sharpness.is_fully_sharpened(model)}))
        """,
        {"KERAS_BACKEND": "jax", "XLA_FLAGS": "--xla_force_host_platform_device_count=2"},
    )
    assert report["devices"] == 2 and report["sharp"] is True
    assert all(values == [1.0] for values in report["replicas"].values()), report


@pytest.mark.skipif(find_spec("tensorflow") is None, reason="needs TensorFlow")
def test_tf_mirrored_strategy_on_two_logical_cpus():
    report = run_script(
        """
        import tensorflow as tf
        cpu = tf.config.list_physical_devices("CPU")[0]
        logical = [tf.config.LogicalDeviceConfiguration()] * 2
        tf.config.set_logical_device_configuration(cpu, logical)
        strategy = tf.distribute.MirroredStrategy(["/cpu:0", "/cpu:1"])
        model = train(strategy.scope())
        replicas = {
            layer.name: sorted({float(v.numpy()) for v in
                                strategy.experimental_local_results(layer.sharpness.value)})
            for layer in ws.sharpness.spiking_layers(model)
        }
        print(json.dumps({"replicas_in_sync": strategy.num_replicas_in_sync,
                          "replicas": replicas,
                          "sharp": ws.sharpness.is_fully_sharpened(model)}))
        """,
        {"KERAS_BACKEND": "tensorflow"},
    )
    assert report["replicas_in_sync"] == 2 and report["sharp"] is True
    assert all(values == [1.0] for values in report["replicas"].values()), report


def free_ports(n: int) -> list[int]:
    sockets = [socket.socket() for _ in range(n)]
    for s in sockets:
        s.bind(("localhost", 0))
    ports = [s.getsockname()[1] for s in sockets]
    for s in sockets:
        s.close()
    return ports


WORKER = """
import tensorflow as tf
strategy = tf.distribute.MultiWorkerMirroredStrategy()
model = train(strategy.scope())
print(json.dumps({name: value for name, value in ws.sharpness.get_sharpness(model).items()}))
"""


@pytest.mark.slow
@pytest.mark.skipif(find_spec("tensorflow") is None, reason="needs TensorFlow")
@pytest.mark.xfail(
    strict=True,
    reason="Keras 3 (3.15) with TF 2.21: model.fit under MultiWorkerMirroredStrategy fails "
    "even for a plain model (upstream); once it works, this test checks that every worker "
    "ends at the same sharpness",
)
def test_multi_worker_mirrored_strategy_keeps_workers_at_the_same_sharpness():
    ports = free_ports(2)
    cluster = {"worker": [f"localhost:{port}" for port in ports]}
    workers = []
    for index in range(2):
        config = json.dumps({"cluster": cluster, "task": {"type": "worker", "index": index}})
        env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3", "KERAS_BACKEND": "tensorflow",
               "TF_CONFIG": config}  # fmt: skip
        workers.append(subprocess.Popen(
            [sys.executable, "-c", TRAIN + WORKER], env=env, text=True,
            stdout=subprocess.PIPE, stderr=subprocess.PIPE,
        ))  # fmt: skip
    reports = []
    try:
        for worker in workers:
            out, err = worker.communicate(timeout=600)
            assert worker.returncode == 0, err[-3000:]
            reports.append(json.loads(out.strip().splitlines()[-1]))
    finally:
        for worker in workers:
            if worker.poll() is None:
                worker.kill()
                worker.wait()
    assert reports[0] == reports[1] and set(reports[0].values()) == {1.0}
