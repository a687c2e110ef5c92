"""Modeling code that ``VersatileCausalLMMixin.save_pretrained`` copies into a folder as ``modeling_versatileffn.py``
when it is called directly (e.g. by the HF ``Trainer``): it needs the versatileffn package
(``pip install 'versatileffn[hf]'``). ``save_converted`` / ``versatileffn convert`` / ``versatileffn export`` replace
it by self-contained code that loads without the package (``hf/remote_code.py``)."""
# VersatileLlamaConfig / VersatileLlamaForCausalLM, VersatileQwen2..., VersatileMistral..., VersatileOlmo2...
from versatileffn.hf.modeling import *  # noqa: F401,F403
