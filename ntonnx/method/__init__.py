"""The method stage: from :class:`~ntonnx.activations.Activations` to a new head, in NumPy and SciPy only.

``neurons`` scores neurons (NeuronTune's identification), ``solve`` re-fits a head, ``splits``
divides held-out data between the two roles, ``metrics`` measures, and every module that
defines ``METHOD`` is a ``--method`` (see :mod:`ntonnx.method.registry`). Nothing here imports
onnx, onnxruntime or :mod:`ntonnx.graph`.
"""
