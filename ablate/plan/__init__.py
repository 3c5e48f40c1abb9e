"""`python -m ablate.plan PLAN`: a planner's ablation plan as a preset (`__main__`).

The optimizer parts a plan may name (`components`), how its words find them (`words`), the
plan's Markdown or JSONL and a preset's YAML (`parse`), the preset built from a plan
(`preset`) and the jobs a preset expands to (`jobs`). This package imports nothing.
"""
