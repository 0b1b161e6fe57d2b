"""Scoring landmark predictions: ``metrics`` (pure functions of arrays), ``protocol`` (the paper's evaluation of a
model on annotated faces), ``calibration`` (the mirror-axis offset fitted on validation faces), ``plots`` (the CED
figure; matplotlib is optional and imported only there).

A model enters through the ``protocol.LandmarkPredictor`` interface, so this room never imports the inference
backends above it."""
