"""Modeling code of a VersatileFFN model saved by ``versatileffn`` (copied into the folder as
``modeling_versatileffn.py``), so that ``AutoModelForCausalLM.from_pretrained(DIR, trust_remote_code=True)``
loads it. The implementation lives in the ``versatileffn`` package: ``pip install versatileffn[transformers]``."""
# VersatileLlamaConfig / VersatileLlamaForCausalLM, VersatileQwen2..., VersatileMistral..., VersatileOlmo2...
from versatileffn.hf.modeling import *  # noqa: F401,F403
