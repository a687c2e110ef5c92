"""Paper Sec. 4.3 for any model with VersatileFFN layers: executed loops, gate lambda, expert load, width-vs-depth
similarity, word clouds by lambda and the inference loop-cap compute/quality sweep (``versatileffn analyze``)."""
from .analyze import draw_figures, run_analysis
from .collect import LayerTrace, collect, find_versatile_layers, token_quantities
from .inputs import load_analysis_tokenizer, load_analysis_tokens
from .summarize import layer_table, sample_cos_matrix, token_lambda_ranking
from .sweep import ffn_flops_summary, flops_config, loop_cap_sweep

__all__ = ["run_analysis", "draw_figures", "LayerTrace", "collect", "find_versatile_layers", "token_quantities",
           "load_analysis_tokenizer", "load_analysis_tokens", "layer_table",
           "sample_cos_matrix", "token_lambda_ranking", "ffn_flops_summary", "flops_config", "loop_cap_sweep"]
