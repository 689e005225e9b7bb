"""The ``ntonnx`` command line: a thin click layer over the :mod:`ntonnx` API."""
