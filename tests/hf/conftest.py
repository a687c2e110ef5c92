"""Tiny randomly initialised dense models of every supported architecture, built offline."""
import pytest
import torch


def _trained(model, input_ids):
    """One SGD step and the next step's tau, so the model's state differs from the conversion's."""
    model.train()
    model(input_ids, labels=input_ids).loss.backward()
    with torch.no_grad():
        for p in model.parameters():
            if p.grad is not None:
                p.sub_(0.1 * p.grad)
    model.set_temperature_step(1)
    return model.eval()


@pytest.fixture
def trained():
    return _trained

try:
    import transformers
except ImportError:  # the hf extra is not installed: every test module here skips itself
    transformers = None

VOCAB = 97
TINY = dict(vocab_size=VOCAB, hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=4,
            num_key_value_heads=2, max_position_embeddings=64, bos_token_id=1, eos_token_id=2, pad_token_id=0)
CONFIG_CLASSES = {"llama": "LlamaConfig", "qwen2": "Qwen2Config", "mistral": "MistralConfig", "olmo2": "Olmo2Config"}
ARCHS = [a for a, c in CONFIG_CLASSES.items() if hasattr(transformers, c)] if transformers else []
FFN = {"n_experts": 4, "top_k": 2, "max_loops": 3}


def tiny_dense(arch: str, seed: int = 0, **overrides):
    cfg = getattr(transformers, CONFIG_CLASSES[arch])(**{**TINY, **overrides})
    torch.manual_seed(seed)
    return transformers.AutoModelForCausalLM.from_config(cfg).eval()


@pytest.fixture
def make_dense():
    return tiny_dense


@pytest.fixture
def input_ids():
    return torch.randint(3, VOCAB, (2, 11), generator=torch.Generator().manual_seed(1))


def pytest_generate_tests(metafunc):
    if "arch" in metafunc.fixturenames:  # every test taking `arch` runs for every supported architecture
        metafunc.parametrize("arch", ARCHS)
    if "norm_arch" in metafunc.fixturenames:  # one pre-norm and (transformers >= 4.47) the post-norm one
        metafunc.parametrize("norm_arch", [a for a in ("llama", "olmo2") if a in ARCHS])


@pytest.fixture
def ffn_options():
    return dict(FFN)


@pytest.fixture
def newest_arch():
    """OLMo2 (post-norm) where this transformers has it, else the last pre-norm architecture."""
    return ARCHS[-1]
