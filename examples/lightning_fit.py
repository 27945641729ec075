"""Freeze-SGD in a Lightning fit: the callback imposes the template and resets after every
optimizer step (here every 2 batches: gradient accumulation), logging polarity/resets.

    pip install polarity[lightning]; python examples/lightning_fit.py
"""
import lightning.pytorch as pl
import torch
from torch import nn

from polarity import Template
from polarity.integrations.lightning import PolarityCallback


class Classifier(pl.LightningModule):
    def __init__(self):
        super().__init__()
        self.net = nn.Sequential(nn.Linear(8, 64), nn.ReLU(), nn.Linear(64, 2))

    def training_step(self, batch, batch_idx):
        x, y = batch
        loss = nn.functional.cross_entropy(self.net(x), y)
        self.log("loss", loss)
        return loss

    def configure_optimizers(self):
        return torch.optim.Adam(self.parameters(), lr=0.05)


torch.manual_seed(0)
x = torch.randn(512, 8)
y = (x[:, 0] * x[:, 1] > 0).long()
data = torch.utils.data.DataLoader(torch.utils.data.TensorDataset(x, y), batch_size=32)
model = Classifier()
template = Template.random(model, seed=0)     # names as the LightningModule has them: net.0.weight
callback = PolarityCallback(template, reset="posRand", seed=0)
trainer = pl.Trainer(max_epochs=5, accumulate_grad_batches=2, callbacks=[callback],
                     accelerator="cpu", logger=False, enable_checkpointing=False,
                     enable_progress_bar=False, enable_model_summary=False)
trainer.fit(model, data)
freezer = callback.freezer
print(f"optimizer steps {freezer.steps}, entries reset {int(freezer.total_reset)}, "
      f"violations {sum(template.violations(model).values())}")
assert sum(template.violations(model).values()) == 0
