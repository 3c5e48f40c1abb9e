"""`python -m ablate.report SWEEP_DIR`: one row per variant of a sweep (`__main__`).

The jobs of a sweep directory (`read`), grouped into variants by their mapping and compared
with a baseline (`groups`), their statistics (`stats`), the table and its notes (`table`),
the preset's claims judged (`claims`) and the plots (`plots`). This package imports
nothing: reading a report loads no torch.
"""
