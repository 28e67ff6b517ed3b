"""`python -m training.check_adapter --base-model SPEC --adapter DIR --text "..."`: proof that an
adapter changes the model.

Loads the base model (the same spec the adapter was trained from: a `tiny:` preset is rebuilt
identically from its seed; on a GPU when there is one, in bfloat16 where supported), runs the
text through it, loads the adapter onto it with peft (`PeftModel.from_pretrained`), runs the text
again, and prints one JSON line:

    {"max_abs_logit_diff": float, "tokens": int, "base_model": SPEC, "adapter": DIR}

`max_abs_logit_diff` is the largest absolute difference between the two models' logits over every
position and vocabulary entry; 0.0 means the adapter does nothing (a fresh LoRA's B matrix is
zero). Exit codes: 0 printed; 2 bad input (unknown base model, no adapter_config.json in DIR, empty
text), message on stderr; 1 anything else.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import traceback
from pathlib import Path

from training.inputs import BadInput, parse_base_model


def _check(base_spec: str, adapter: Path, text: str) -> dict[str, object]:
    base = parse_base_model(base_spec)
    if not (adapter / "adapter_config.json").is_file():
        raise BadInput(f"{adapter} holds no adapter (no adapter_config.json)")
    if not text:
        raise BadInput("--text is empty")
    if base.kind != "hub":
        os.environ["HF_HUB_OFFLINE"] = "1"

    # Imported once the input is known good: a bad input costs no torch import.
    import torch  # noqa: PLC0415
    from peft import PeftModel  # noqa: PLC0415

    from training.modeling import load_base, pick_device, pick_dtype  # noqa: PLC0415

    device = pick_device()
    model, tokenizer, max_length = load_base(base, pick_dtype(device))
    model.to(device)
    model.eval()
    ids = tokenizer(text, add_special_tokens=False, return_tensors="pt")["input_ids"][
        :, :max_length
    ].to(device)
    with torch.no_grad():
        before = model(input_ids=ids).logits
        tuned = PeftModel.from_pretrained(model, str(adapter))
        tuned.eval()
        after = tuned(input_ids=ids).logits
    return {
        "max_abs_logit_diff": float((after.float() - before.float()).abs().max()),
        "tokens": int(ids.shape[1]),
        "base_model": base_spec,
        "adapter": str(adapter),
    }


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m training.check_adapter", description=__doc__)
    p.add_argument("--base-model", required=True)
    p.add_argument("--adapter", type=Path, required=True)
    p.add_argument("--text", required=True)
    args = p.parse_args(argv)
    try:
        result = _check(args.base_model, args.adapter, args.text)
    except BadInput as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    except Exception:  # report and exit 1, like training.train
        traceback.print_exc()
        return 1
    print(json.dumps(result), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
