"""`python -m ablate.plan PLAN [--out FILE] [--claim CLAIM] [--dry-run]`: a planner's ablation
plan as a preset.

A plan (the planner's Markdown, as the files in shared/planner-plans/ are, or JSONL with one
ablation per line) names components in its own words. One registry (plan/components.py)
maps those words to config keys; every ablation becomes variants of one baseline, each
changing one key. The written preset (conf/ablation/NAME.yaml) sweeps `ablation.variant` x
`trainer.seed` (over `ablation.seeds`). Each `--claim 'VARIANT EXPECT AGAINST [MARGIN]'`
becomes one of its `ablation.claims`, which the report judges.
`--dry-run` prints one line per job: the overrides `python -m ablate` would need for it.
A preset file (.yaml) is accepted too, with --dry-run, to list the jobs it expands to.
"""

from __future__ import annotations

import argparse
import re
import sys
from pathlib import Path

from ..config.claims import check_claims
from ..config.schema import config_dir
from ..errors import ConfigError, PlanError
from . import words
from .jobs import jobs
from .parse import parse_claim, parse_jsonl, parse_markdown, read, read_preset
from .preset import preset, write

MAX_SEEDS = 1000  # every seed is a training run per variant: more is a typo


def seed_count(text: str) -> int:
    if not re.fullmatch(r"\+?\d+", text.strip()) or not 1 <= int(text) <= MAX_SEEDS:
        raise argparse.ArgumentTypeError(f"{text!r}: must be an integer from 1 to {MAX_SEEDS}")
    return int(text)


class Parser(argparse.ArgumentParser):
    """argparse whose usage errors are one line and exit status 1, as every bad input."""

    def error(self, message: str):
        sys.exit(f"ablate.plan: error: {message}")


def main(argv: list[str] | None = None) -> None:
    parser = Parser(prog="python -m ablate.plan", description=__doc__ + "\n" + words.__doc__,
                    formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("plan", help="plan file (.md/.txt Markdown, .jsonl), a preset .yaml "
                                     "(with --dry-run), or - for standard input")
    parser.add_argument("--out", help="preset to write, a .yaml file (default "
                                      "conf/ablation/NAME.yaml)")
    parser.add_argument("--name", help="preset name (default from the plan's file name)")
    parser.add_argument("--seeds", type=seed_count, default=3,
                        help=f"seeds per variant (default 3, at most {MAX_SEEDS})")
    parser.add_argument("--claim", action="append", default=[], metavar="'VARIANT EXPECT "
                        "AGAINST [MARGIN]'", help="a claim the report checks (repeatable): "
                        "EXPECT is worse, better, equivalent or not_worse (these two with a "
                        "MARGIN); VARIANT and AGAINST name the preset's variants")
    parser.add_argument("--dry-run", action="store_true",
                        help="print one line per job (its overrides) and write nothing")
    args = parser.parse_args(argv)
    if args.name is not None and not re.fullmatch(r"[A-Za-z0-9_-]+", args.name):
        parser.error(f"argument --name: {args.name!r}: letters, digits, _ and - only "
                     "(it names conf/ablation/NAME.yaml)")
    if args.out is not None and not re.fullmatch(r"[A-Za-z0-9_-]+\.yaml", Path(args.out).name):
        parser.error(f"argument --out: {args.out!r}: a preset is NAME.yaml, NAME of letters, "
                     "digits, _ and - (it is +ablation=NAME)")
    is_preset = args.plan.endswith((".yaml", ".yml"))
    if is_preset and not args.dry_run:
        parser.error(f"{args.plan} is a preset already: add --dry-run to list its jobs")
    if is_preset and args.claim:
        parser.error(f"--claim: {args.plan} is a preset already: it states its claims in "
                     "ablation.claims")
    try:
        text, name = read(args.plan)
        notes = []
        if is_preset:
            body = read_preset(text, args.plan)
        else:
            ablations = (parse_jsonl(text) if args.plan.endswith(".jsonl")
                         or text.lstrip().startswith("{") else parse_markdown(text))
            body, notes = preset(ablations, args.name or name, args.seeds)
            if args.claim:
                body["ablation"]["claims"] = [parse_claim(text) for text in args.claim]
                check_claims(body["ablation"]["claims"], list(body["ablation"]["variants"]))
        if args.dry_run:
            lines = [" ".join(job) for job in jobs(body)]
        else:
            out = Path(args.out or config_dir() / "ablation" / f"{body['ablation']['name']}.yaml")
            write(body, out, args.plan)
    except (PlanError, ConfigError) as exc:
        sys.exit(f"ablate.plan: error: {exc}")
    for note in notes:
        print(f"# {note}", file=sys.stderr)
    if body.get("ablation", {}).get("not_measured"):
        print(f"# not measured by the tasks here: "
              f"{', '.join(body['ablation']['not_measured'])}", file=sys.stderr)
    if args.dry_run:
        print("\n".join(lines))
    else:
        print(f"wrote {out}: python -m ablate -m +ablation={out.stem}", file=sys.stderr)


if __name__ == "__main__":
    main()
