"""Helpers shared by the parity-fixture scripts (they need torch; run them with the peer venv)."""
import torch


def uniform_(t, lo, hi, gen):
    t.copy_(torch.rand(t.shape, generator=gen) * (hi - lo) + lo)


def normal_(t, std, gen):
    t.copy_(torch.randn(t.shape, generator=gen) * std)


def is_batch_norm(module):
    return isinstance(module, torch.nn.modules.batchnorm._BatchNorm)


@torch.no_grad()
def randomize_batch_norm(module, gen):
    """Weight ~ U(0.75, 1.25), bias ~ N(0, 0.05²), running mean ~ N(0, 0.1²), running variance
    ~ U(0.5, 2), drawn in that order: BN that is not the identity, so that parity tests see it."""
    uniform_(module.weight, 0.75, 1.25, gen)
    normal_(module.bias, 0.05, gen)
    normal_(module.running_mean, 0.1, gen)
    uniform_(module.running_var, 0.5, 2.0, gen)


@torch.no_grad()
def round_to_float16(model):
    """Rounds every float tensor of the state dict to float16 in place; returns the float16 dict."""
    out = {}
    for key, t in model.state_dict().items():
        if key.endswith("num_batches_tracked"):
            continue
        half = t.detach().to(torch.float16).contiguous()
        t.copy_(half.to(t.dtype))
        out[key] = half
    return out
