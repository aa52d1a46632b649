"""The tools over trained models: predict, serve, export, quantize, explain and sample, each a library module with its
``zoo <tool>`` command.

They sit beside the recipes, above ``zoo``, ``datamodules`` and ``callbacks``: programs that take a finished model (a
checkpoint, an exported file or a preset) to users. Keeping them out of ``zoo`` keeps a model importable without the
tools' optional dependencies (FastAPI, onnxruntime, torchao, captum) and keeps ``zoo`` to models, layers, tasks and
the registry.

Every tool runs one path (:mod:`recipes.tools.inference`): the checkpoint is read once; the model's task says what its
inputs and outputs are (``TaskModule.preprocessing``, ``predict_tensors``, ``answers``); the data's preprocessing
(normalization, image size, class names, vocabulary, a forecaster's scaler) comes from the checkpoint, where the
datamodule saved it, or from an ONNX file's metadata. No datamodule is built and no data path is read.
"""
