"""edgecvm: Continual Visual Mapping on small devices.

A frozen ONNX backbone turns frames into features; a small numpy projection
head maps features into a fixed concept space built offline by a language
model; prediction is the nearest concept anchor by cosine similarity.
"""

__version__ = "0.1.0"
