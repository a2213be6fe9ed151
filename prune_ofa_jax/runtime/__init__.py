"""Deployment runtimes: the classifier as an ONNX graph (fp32, or int8 with the QAT model's
own scales) and onnxruntime sessions to run it (runtime/ort.py)."""
