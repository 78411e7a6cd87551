"""Lab 13's solution functions agree with attnlib.interp on fresh random inputs."""

import torch
from helpers import exercise_namespace
from torch import nn

import attnlib.interp as interp


def test_lab13_solution_agrees_with_attnlib():
    ns = exercise_namespace("lab13_attention_as_explanation")
    g = torch.Generator().manual_seed(1313)
    for n_layers, b, h, n, r in [(1, 2, 1, 3, 0.5), (3, 1, 2, 5, 0.3), (2, 3, 3, 4, 0.8)]:
        attns = [torch.softmax(2 * torch.randn(b, h, n, n, generator=g), -1) for _ in range(n_layers)]
        torch.testing.assert_close(ns["attention_rollout"](attns, r), interp.attention_rollout(attns, r))
        torch.testing.assert_close(ns["attention_flow"](attns, r), interp.attention_flow(attns, r),
                                   rtol=1e-6, atol=1e-6)
        torch.testing.assert_close(ns["attention_flow"](attns, r, output=1), interp.attention_flow(attns, r, output=1),
                                   rtol=1e-6, atol=1e-6)
        mask = torch.rand(b, 1, 1, n, generator=g) < 0.4
        torch.testing.assert_close(ns["impermissible_penalty"](attns[0], mask),
                                   interp.impermissible_penalty(attns[0], mask))
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(4, 8), nn.Tanh(), nn.Linear(8, 3)).double()
    x, base = torch.randn(5, 4, dtype=torch.float64), torch.randn(5, 4, dtype=torch.float64)
    target = torch.tensor([0, 2, 1, 1, 0])
    torch.testing.assert_close(ns["grad_x_input"](model, x, target), interp.grad_x_input(model, x, target=target))
    torch.testing.assert_close(ns["integrated_gradients"](model, x, target, baseline=base, steps=11),
                               interp.integrated_gradients(model, x, base, target=target, steps=11))
