"""How many evaluation tokens are enough? Spread from evaluation sampling against spread
from seeds, measured on real runs (the measurement behind `trainer.eval_batches`).

Trains the same config with several seeds, then scores every window of the validation
split (batch_size x seq_len tokens per batch, as the trainer evaluates). For n windows the
evaluation's own sampling error is the standard error of the mean window loss,
std(window losses) / sqrt(n); the seed-to-seed spread is the sample std over seeds of the
loss on the whole split. Every run is scored on the same windows, so a comparison of two
runs sees the error of their difference, std(per-batch loss difference) / sqrt(n) (paired):
evaluation is small enough when that is well under the seed spread.

    python scripts/eval_noise.py [--seeds 3] [overrides, e.g. optimizer=adalomo trainer.max_steps=300]
"""

from __future__ import annotations

import argparse
import math
import statistics

import torch
import torch.nn.functional as F

from ablate.config.variants import compose
from ablate.train import Trainer


def window_losses(trainer: Trainer) -> list[float]:
    """Mean loss of each batch of windows over the whole validation split, in order."""
    t, stream = trainer.t, trainer.task.corpus.val
    rows, size = t.batch_size, t.seq_len + 1
    n_batches = len(stream) // (rows * size)
    windows = stream[:n_batches * rows * size].view(n_batches, rows, size).long()
    trainer.model.eval()
    losses = []
    with torch.no_grad():
        for batch in windows:
            x, y = batch[:, :-1].to(trainer.device), batch[:, 1:].to(trainer.device)
            logits = trainer.model(input_ids=x).logits.float()
            losses.append(F.cross_entropy(logits.view(-1, logits.size(-1)), y.reshape(-1)).item())
    return losses


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("overrides", nargs="*")
    args = parser.parse_args()
    per_seed = []
    for seed in range(args.seeds):
        cfg = compose([*args.overrides, f"trainer.seed={seed}", "trainer.eval_interval=0",
                       "trainer.progress=false"])
        trainer = Trainer(cfg)
        trainer.fit(lambda record: None)
        per_seed.append(window_losses(trainer))
        print(f"seed {seed}: whole-split validation loss {statistics.fmean(per_seed[-1]):.4f} "
              f"over {len(per_seed[-1])} batches", flush=True)
    n_all = len(per_seed[0])
    seed_std = statistics.stdev([statistics.fmean(losses) for losses in per_seed])
    batch_std = statistics.fmean([statistics.stdev(losses) for losses in per_seed])
    pairs = [(a, b) for i, a in enumerate(per_seed) for b in per_seed[i + 1:]]
    diff_std = statistics.fmean([statistics.stdev([x - y for x, y in zip(a, b)])
                                 for a, b in pairs])
    print(f"\nseed-to-seed std of the whole-split loss: {seed_std:.4f}")
    print(f"std of one batch's loss within a run: {batch_std:.4f}; of the per-batch loss "
          f"difference between two seeds' runs: {diff_std:.4f}")
    print("eval_batches  tokens   error (absolute)  error (paired)  paired / seed std  "
          "seed std at this size")
    for n in sorted({8, 16, 32, 48, n_all} & set(range(1, n_all + 1))):
        # The trainer's windows: n batches evenly spaced over the split.
        picks = [round(i * (n_all - 1) / max(1, n - 1)) for i in range(n)]
        sub_seed_std = statistics.stdev([statistics.fmean(losses[i] for i in picks)
                                         for losses in per_seed])
        error, paired = batch_std / math.sqrt(n), diff_std / math.sqrt(n)
        print(f"{n:12d}  {n * cfg.trainer.batch_size * cfg.trainer.seq_len:6d}   {error:16.4f}  "
              f"{paired:14.4f}  {paired / seed_std:17.2f}  {sub_seed_std:.4f}")


if __name__ == "__main__":
    main()
