"""The code that runs inside the fine-tuning job (Azure ML command job, or devhost's job runner).

It has its own requirements (training/requirements.txt: torch, transformers, peft, accelerate) and
its own environment (.venv-training locally, training/environment/ in Azure ML). Nothing in
`shared/` or `devhost/` imports it: they run it as a process, `python -m training.train ...`.

- `training.train`: the entry point (LoRA supervised fine-tuning on chat JSONL).
- `training.check_adapter`: loads base and base+adapter and prints how far their logits differ.
- `training.inputs`: the standard-library half (argument and data checks, hashes, presets), so a bad
  input is refused in a fraction of a second, before torch is imported.
- `training.modeling`: tiny models, the byte tokenizer, loading a base model, encoding chats.
"""
