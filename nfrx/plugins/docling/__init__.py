"""The Docling plugin: document conversion through docling-serve."""
