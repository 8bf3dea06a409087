"""Hugging Face I/O: the Hub (hub.py), safetensors files (safetensors.py), preprocessing
(preprocessing.py) and pre-trained models as Flax modules (pretrained.py)."""
