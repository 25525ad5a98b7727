"""Reproduction: `config` rebuilds the run config a PNG embeds, `regenerate` remakes the image and compares
it; `python -m ideogram4.experiment.reproduce IMAGE.png` runs it."""
