"""Freeze-SGD in a hand-written training loop: fix the signs of a small MLP, train with Adam.

    python examples/plain_loop.py
"""
import torch
from torch import nn

from polarity import Freezer, Template, impose

torch.manual_seed(0)
model = nn.Sequential(nn.Linear(8, 64), nn.ReLU(), nn.Linear(64, 2))
template = Template.random(model, seed=0)     # or Template.from_module(pretrained_model)
impose(model, template)                       # comply by flipping: magnitudes unchanged
optimizer = torch.optim.Adam(model.parameters(), lr=0.05)
freezer = Freezer(model, template, reset="posRand", seed=0)
freezer.attach(optimizer)                     # a reset after every optimizer.step()

x = torch.randn(512, 8)
y = (x[:, 0] * x[:, 1] > 0).long()            # XOR of two signs
for epoch in range(20):
    for i in range(0, len(x), 64):
        loss = nn.functional.cross_entropy(model(x[i:i + 64]), y[i:i + 64])
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
accuracy = (model(x).argmax(1) == y).float().mean().item()
print(f"accuracy {accuracy:.2f}, entries reset {int(freezer.total_reset)}, "
      f"violations {freezer.violations()}")
assert freezer.violations() == 0
