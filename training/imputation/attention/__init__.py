"""The attention-based imputer (SAITS-like), in the PyPOTS layout.

* :mod:`.core`: the network (``forward`` returns a dict with ``"loss"`` and the imputation);
* :mod:`.data`: windows as tensors and the masking that makes the training task;
* :mod:`.model`: :class:`~.model.AttentionImputer`, the public fit / impute / save / load API.

Importing this package does not import torch; its modules do.
"""
