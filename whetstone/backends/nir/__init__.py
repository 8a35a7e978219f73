"""NIR back end: a SpikingNetwork as a Neuromorphic Intermediate Representation graph.

`NIR <https://neuroir.org>`_ (``pip install 'whetstone-snn[nir]'``) is the exchange format
read by Lava / Loihi 2, SpiNNaker2, Speck, Xylo, snnTorch, Norse, Sinabs and others.
:func:`export` writes a ``.nir`` file, :func:`load` reads one back into a
``SpikingNetwork``, :func:`to_graph` / :func:`from_graph` do the same in memory.

The graph is the whole network from pixels to class scores, one chain::

    input -> [flatten] -> linear op -> neuron -> ... -> [flatten] -> decoder -> output

for a chain of stages; a DAG network gives one linear node per edge into a neuron node
(``name_in0``, ``name_in1``, ...: NIR sums a node's inputs), each delayed edge through
a ``Delay`` node (``delay = d dt``).

* **Linear ops.** Dense stages become ``Affine`` (``Linear`` when the stage has no
  bias) with weight ``(out, in)``; conv stages ``Conv2d`` / ``Conv1d`` with weight
  ``(out, in, *window)``; OR-pools ``SumPool2d``. A pool that ``SumPool2d`` cannot
  express (1-D, dilated, or asymmetric 'same' padding) becomes a convolution
  whose kernel is one per tap from each channel to itself (``nir``'s type checks
  do not know ``groups``; groups are read, though).
* **Neurons.** Each stage's neurons are ``LIF`` nodes with ``tau = dt``, ``r = 1``,
  ``v_leak = 0``, ``v_reset = 0``: a forward-Euler reader stepping at ``dt`` computes
  ``v = v_leak + r I`` every step, so the neurons are memoryless, as the contract
  requires (``tau`` and ``r`` are float64 so that snnTorch's ``beta = 1 - dt/tau``
  is exactly 0). LIF is the most widely read NIR neuron; ``IF`` keeps its voltage
  between steps (snnTorch even reads it as a leaky neuron with beta 0.9) and
  ``Threshold`` is rarely read (not by snnTorch), so neither is written
  (``Threshold`` is imported). A bias that depends on the position (``bias`` of
  ``output_shape``) goes into ``v_leak``; any other stays in the linear op's bias.
* **Ties.** NIR fires on ``v > v_threshold``; whetstone on ``v >= theta``. The file
  holds ``v_threshold = nextafter(float32(theta), -inf)``, the float32 just below
  ``theta``; a reader computing ``v`` in float32 then fires exactly when
  ``v >= theta``. A float64 reader also fires for ``theta - 1 ulp <= v < theta``
  (one float32 ulp, 6e-8 at 0.5): those neurons are ties (within 1e-6 of the
  threshold), which the contract counts rather than forbids; so is ``theta = 0``
  on a reader that flushes denormals. :func:`load` restores
  ``theta = nextafter(v_threshold, +inf)`` exactly.
* **Layout.** NIR is channels-first: a stage of shape ``(H, W, C)`` is a NIR tensor
  ``(C, H, W)``; kernels ``(kh, kw, in, out)`` become ``(out, in, kh, kw)``. A dense
  stage after a convolution reads through ``Flatten(start_dim=0)`` (per-sample
  dims, NIR's convention) of the ``(C, H, W)`` tensor, so its weight columns are
  permuted from whetstone's row-major ``(H, W, C)`` order to ``(C, H, W)`` order.
* **Padding and kernel shape.** NIR pads symmetrically, and nir 1.0 infers a
  ``Conv2d``'s output width from the kernel height, so kernels are written square
  with symmetric padding; zero taps added before or after make that exact (Keras
  'same' with a 2x2 kernel, one row and column of padding after, is written as a
  3x3 kernel with a leading zero row and column, padding 1). Where no such layout
  exists (e.g. a 1x2 kernel at stride 1) export refuses and says why. Import strips
  zero taps back to Keras 'valid' / 'same'. Readers that ignore ``SumPool2d``
  padding (nirtorch, snnTorch) differ on 'same' OR-pools; 'valid' pools are exact.
* **Input.** The encoder stage (``input_encoding == "host"``) is an ordinary stage
  of the graph, so the graph reads real pixels: ``(C, H, W)`` when the first stage
  is a convolution or pool (see :func:`nir_input`), else the flat ``(n,)`` input.
* **Decoder.** ``KeyDecoder``: an ``Affine`` with weight ``2 (2K - 1)`` and bias
  ``-sum(2K - 1)``, whose output is the key vote ``(2s - 1)(2K - 1)^T`` exactly.
  ``ReadoutDecoder``: an ``Affine`` with its weights (the softmax is not in the
  graph; the argmax is the same). No decoder: the output is the last spikes.
* **Metadata.** The graph's metadata holds the source, versions, ``dt``, the
  neuron and threshold conventions, and a ``whetstone`` JSON string with what NIR
  does not say (stage names, the decoder type, input shape and encoding, the
  network's metadata); :func:`load` uses it to restore the very same
  ``SpikingNetwork`` and reads graphs without it (from other tools) too.

Timing: every node of a NIR graph acts within the step, so a reader yields the
output of an input in the same step; stepping it for ``net.latency`` steps with
the input held gives the same final output. :meth:`NIRBackend.run` runs the graph
through :func:`from_graph` and the reference simulator (after an in-memory
``nir.write`` / ``nir.read``); ``benchmarks/backend_nir.py`` checks an exported
file with snnTorch's NIR reader.

Example:
    >>> import numpy as np, os, tempfile
    >>> from whetstone.network import Stage, SpikingNetwork, KeyDecoder
    >>> stage = Stage("d", "dense", (3,), (2,), np.ones((3, 2), "float32"))
    >>> net = SpikingNetwork((3,), [stage], KeyDecoder(np.eye(2)))
    >>> path = os.path.join(tempfile.mkdtemp(), "net.nir")
    >>> path = export(net, path)                      # doctest: +SKIP
    >>> load(path) == net                             # doctest: +SKIP
    True
"""

from __future__ import annotations

import io
import os
import time
from pathlib import Path

import numpy as np

from whetstone.backends import BackendResult, compared, register
from whetstone.backends.nir.layout import DT, UnsupportedGraphError, _nir, nir_input
from whetstone.backends.nir.read import from_graph, load
from whetstone.backends.nir.write import VARIANTS, export, to_graph
from whetstone.network import SpikingNetwork

__all__ = [
    "DT",
    "VARIANTS",
    "NIRBackend",
    "UnsupportedGraphError",
    "export",
    "from_graph",
    "load",
    "nir_input",
    "to_graph",
]


@register("nir")
class NIRBackend:
    """The NIR back end: ``build`` gives the ``nir.NIRGraph``, ``export`` writes it,
    ``load`` reads one, ``run`` simulates the graph (written and read back in memory)
    through :func:`from_graph` and the reference simulator.

    Example:
        >>> import whetstone.backends as backends
        >>> backends.get("nir").extra
        'nir'
    """

    extra = "nir"

    def is_available(self) -> bool:
        """Whether the ``nir`` package is installed."""
        try:
            _nir()
        except ImportError:
            return False
        return True

    def build(self, net: SpikingNetwork, dt: float = DT):
        """The ``nir.NIRGraph`` of ``net``."""
        return to_graph(net, dt)

    def export(
        self,
        net: SpikingNetwork,
        path: str | os.PathLike,
        *,
        force: bool = False,
        x=None,
        y=None,
        dt: float = DT,
        variant: str = "memoryless",
    ) -> Path:
        """Write ``net`` as a NIR file (atomically; replaces a file only with ``force=True``).

        A NIR export is one graph file: it ships no inputs, so ``x`` and ``y`` must be None.
        ``variant``: one of :data:`VARIANTS` (``one_step`` for Sinabs and SpikingJelly).
        """
        if x is not None or y is not None:
            raise ValueError(
                "nir export writes one .nir graph file and ships no inputs; drop x and y "
                "(or export to a folder back end: nengo, loihi, spinnaker)."
            )
        return export(net, path, dt, force, variant)

    def load(self, path: str | os.PathLike) -> SpikingNetwork:
        """Read a NIR file as a SpikingNetwork."""
        return load(path)

    def resources(self, net: SpikingNetwork, dt: float = DT) -> dict:
        """Nodes, edges and parameters of the graph (the whole network, host encoder too).

        Example:
            >>> from whetstone.network import Stage, SpikingNetwork
            >>> net = SpikingNetwork((2,), [Stage("d", "dense", (2,), (1,), np.ones((2, 1)))])
            >>> NIRBackend().resources(net)                   # doctest: +SKIP
            {'nodes': 4, 'edges': 3, 'parameters': 7}
        """
        graph = to_graph(net, dt)
        arrays = [v for node in graph.nodes.values() for v in vars(node).values()]
        parameters = sum(np.size(a) for a in arrays if isinstance(a, np.ndarray) and a.ndim)
        return {"nodes": len(graph.nodes), "edges": len(graph.edges), "parameters": parameters}

    def run(
        self,
        net: SpikingNetwork,
        x: np.ndarray,
        *,
        compare_reference: bool = False,
        progress=None,
        dt: float = DT,
    ) -> BackendResult:
        """Write the graph, read it back, import it and run the reference simulator."""
        from whetstone.simulate import run

        nir = _nir()
        x = net.check_input(x, "nir back end")
        started = time.perf_counter()
        buffer = io.BytesIO()
        nir.write(buffer, to_graph(net, dt))
        buffer.seek(0)
        imported = from_graph(nir.read(buffer))
        built = time.perf_counter()
        result = run(imported, x)
        if progress is not None:
            progress(len(x))
        done = BackendResult(
            predictions=result.predictions,
            output_spikes=result.output_spikes.reshape(len(result.predictions), -1),
            spike_counts=result.spike_counts,
            info={
                "reader": "whetstone.backends.nir.from_graph + whetstone.simulate.run",
                "file_bytes": buffer.getbuffer().nbytes,
                "ties": result.ties,
                "latency": result.latency,
            },
            build_seconds=built - started,
            run_seconds=time.perf_counter() - built,
        )
        return compared(net, x, done) if compare_reference else done
