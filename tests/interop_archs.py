"""The architectures tests/test_torch.py and tests/test_jax.py run over
(small: gradcheck and full Hessians): a dense network with l2, a binary
cross-entropy head, an LSTM and a bidirectional GRU (with lengths), a CNN
and a causal transformer block over token ids."""
from conftest import mlp

LSTM = {"name": "tt_lstm", "input": {"features": 2, "steps": 3},
        "layers": [{"type": "lstm", "units": 3}, {"type": "dense", "units": 2}],
        "loss": {"type": "softmax_cross_entropy", "steps": "all"},
        "regularization": {"l2": 0.01}}
CONV = {"name": "tt_conv", "input": {"channels": 1, "height": 5, "width": 5},
        "layers": [{"type": "conv2d", "filters": 2, "kernel": 3, "activation": "tanh"},
                   {"type": "avgpool2d", "size": 3}, {"type": "flatten"},
                   {"type": "dense", "units": 3}],
        "loss": "softmax_cross_entropy"}
TOKENS = {"name": "tt_tf", "input": {"tokens": 5, "steps": 3},
          "layers": [{"type": "embedding", "units": 4, "positions": True},
                     {"type": "block", "residual": True,
                      "layers": [{"type": "layernorm"}, {"type": "attention", "heads": 2,
                                                         "causal": True}]},
                     {"type": "dense", "units": 5}],
          "loss": "softmax_cross_entropy"}
BIRNN = {"name": "tt_birnn", "input": {"features": 2, "steps": 3},
         "layers": [{"type": "birnn", "cell": "gru", "units": 2}, {"type": "dense", "units": 2}],
         "loss": {"type": "sigmoid_binary_cross_entropy", "steps": "last"}}
ARCHS = {"mlp": mlp(name="tt_mlp", l2=1e-2), "birnn": BIRNN, "bce": mlp("softplus", "sigmoid_binary_cross_entropy",
                                                       name="tt_bce", hidden=(3,)),
         "lstm": LSTM, "conv": CONV, "transformer": TOKENS}
