"""Running trained models on images: ``pipeline`` (crops, box refinement, multi-crop, mirror-averaging, shared by
every backend), ``backends`` (torch and onnxruntime), ``loading`` (backend choice and shipped files),
``test_time`` (test-time options), ``detectors`` (face detection), ``smoothing`` (video), ``export`` (ONNX and
int8), ``draw`` and ``api`` (``LandmarkDetector``, ``FaceResult``).

Nothing is imported here: the onnxruntime path must load without torch."""
