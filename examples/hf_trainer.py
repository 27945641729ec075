"""Freeze-SGD in a Hugging Face Trainer: a tiny BERT built from a config (no download), its
word embeddings tied to the output layer (constrained once), trained on random tokens.

    pip install polarity[transformers]; python examples/hf_trainer.py
"""
import tempfile

import torch
import transformers

from polarity import Template
from polarity.integrations.transformers import PolarityCallback

torch.manual_seed(0)
config = transformers.BertConfig(vocab_size=100, hidden_size=32, num_hidden_layers=2,
                                 num_attention_heads=2, intermediate_size=64,
                                 max_position_embeddings=32, tie_word_embeddings=True)
model = transformers.BertForMaskedLM(config)
template = Template.from_init(model)   # or Template.from_module(pretrained).adapt(model, ...)

tokens = torch.randint(0, 100, (64, 16))
dataset = [{"input_ids": t, "labels": t} for t in tokens]
args = transformers.TrainingArguments(
    output_dir=tempfile.mkdtemp(), per_device_train_batch_size=8, gradient_accumulation_steps=2,
    learning_rate=1e-2, num_train_epochs=2, logging_steps=1, save_strategy="no",
    report_to="none", use_cpu=True, disable_tqdm=True)
callback = PolarityCallback(template, reset="posRand", seed=0)
trainer = transformers.Trainer(model=model, args=args, train_dataset=dataset, callbacks=[callback])
trainer.train()
resets = [h["polarity/resets"] for h in trainer.state.log_history if "polarity/resets" in h]
print(f"resets per optimizer step {resets}, violations {sum(template.violations(model).values())}")
assert sum(template.violations(model).values()) == 0
