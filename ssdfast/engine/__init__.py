"""Training engine: trainer, checkpoint I/O, distributed helpers."""
