"""The token language model: vocabulary and grammar in ``tokens``, the transformer in
``core``, fit / sample / save in ``model``."""
