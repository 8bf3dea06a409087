"""Flax ports of Hugging Face transformers' vision families (resnet.py, vit.py with
vit_encoder.py, mobilenet_v2.py; the contract in common.py) and a pre-trained backbone with a new
head (classifier.py). Which family a config.json is: kdjax.models.FAMILIES."""
