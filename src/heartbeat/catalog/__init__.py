"""What is stored and how it is found: images, the software registry, exports, pipelines, check."""
