"""The network runners behind ``pipeline.CropLandmarkModel``: ``torch`` (a checkpoint in torch) and ``onnx`` (an
exported graph in onnxruntime, no torch). Imported one by one, so that the onnx backend never loads torch."""
