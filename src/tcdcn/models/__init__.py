"""The network and its files: ``network`` (TCDCN: features, heads, head swap), ``checkpoint`` (checked loads
and atomic saves), ``denormals`` (flushing subnormal weights), ``registry`` (the shipped models, read from the
model cards in ``weights/``).

Nothing is imported here: ``registry`` must load without torch (the onnxruntime path reads it)."""
