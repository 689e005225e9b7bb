"""The graph stage: everything that reads, runs or writes the ONNX model.

``model_io`` loads and saves files safely, ``index`` answers questions about a graph, ``heads``
finds the classifier head and reads/writes its weights, ``runtime`` runs the model with
onnxruntime to produce :class:`~ntonnx.activations.Activations`, ``rewrite`` makes the tuned copy and
``verify`` proves it. This is the only stage that imports onnx and onnxruntime.
"""
