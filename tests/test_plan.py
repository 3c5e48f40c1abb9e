"""Planner plans become presets: every shared plan imports, and its jobs are the expected ones;
other wordings of a part find their component; every bad input is one line on stderr."""

from __future__ import annotations

import io
import json
from pathlib import Path

import pytest
import yaml
from conftest import ablate, run_in_process

from ablate.config.schema import config_dir
from ablate.errors import PlanError
from ablate.plan import components
from ablate.plan.__main__ import main
from ablate.plan.components import COMPONENTS
from ablate.plan.jobs import jobs
from ablate.plan.parse import parse_markdown
from ablate.plan.preset import preset
from ablate.plan.words import component_for, scores

PLANS = Path(__file__).resolve().parents[2] / "shared" / "planner-plans"
needs_plans = pytest.mark.skipif(not PLANS.is_dir(), reason=f"{PLANS} is not beside the repo")


def plan(prefix: str) -> str:
    (path,) = PLANS.glob(f"{prefix}_*.txt")
    return path.read_text()


def dry_run(*args: str, stdin: str = "") -> tuple[int, str, str]:
    """`python -m ablate.plan ARGS --dry-run`, in this process: exit status, stdout, stderr."""
    return run_in_process(Path.cwd(), *args, "--dry-run", module="ablate.plan", stdin=stdin)


@needs_plans
@pytest.mark.parametrize("prefix, optimizer, variants", [
    ("000", "adalomo", {(), ("toggles.adaptive_lr=false",), ("toggles.grouped_norm=false",)}),
    ("001", "adalomo", {(), ("toggles.adaptive_lr=false",), ("toggles.nmf=false",)}),
    ("003", "galore_adamw", {(), ("toggles.projection=none",), ("toggles.projection=random",),
                              ("toggles.projection=pca",), ("optimizer.update_proj_gap=50",),
                              ("optimizer.update_proj_gap=1000",), ("toggles.eight_bit=false",),
                              ("optimizer.rank=4",), ("optimizer.rank=8",),
                              ("optimizer.rank=16",)}),
    ("004", "galore_adamw", {(), *{(f"optimizer.update_proj_gap={t}",) for t in (50, 1000, 10000)},
                              *{(f"optimizer.rank={r}",) for r in (4, 8, 16, 32)},
                              *{(f"optimizer.scale={a}",) for a in (0.5, 1.0, 2.0)},
                              ("toggles.projection=random",), ("toggles.two_sided=true",)}),
])
def test_every_shared_plan_imports_with_the_expected_jobs(prefix, optimizer, variants, capsys):
    (path,) = PLANS.glob(f"{prefix}_*.txt")
    main([str(path), "--dry-run"])  # in-process: the real-process runs are below
    lines = capsys.readouterr().out.splitlines()
    assert len(lines) == 3 * len(variants)  # three seeds each
    baseline = {"optimizer": optimizer}
    for line in lines:
        assert line.startswith(f"optimizer={optimizer} ")
    first = dict(word.split("=", 1) for word in lines[0].split())
    baseline.update({k: v for k, v in first.items() if k != "trainer.seed"})
    found = set()
    for line in lines:
        job = dict(word.split("=", 1) for word in line.split())
        changed = tuple(f"{k}={v}" for k, v in job.items()
                        if k != "trainer.seed" and baseline.get(k) != v)
        found.add(changed)
    assert found == variants


@needs_plans
def test_unmeasured_metrics_are_listed_not_ignored():
    body, _ = preset(parse_markdown(plan("000")), "p", seeds=3)
    assert body["ablation"]["not_measured"] == ["MMLU", "BBH", "GSM8K", "HumanEval",
                                                "AlpacaFarm", "Avg."]
    body, _ = preset(parse_markdown(plan("004")), "p", seeds=3)
    assert body["ablation"]["not_measured"] == ["Fine-tuning GLUE Score"]


def test_unknown_part_is_an_error_listing_known_components_closest_first():
    with pytest.raises(PlanError, match=r"unknown ablated part 'Adaptive learning rat'; known "
                                        r"components, closest first: adaptive_lr, "):
        component_for("Adaptive learning rat")
    code, out, err = dry_run("-", stdin=json.dumps({"name": "x", "ablated_part": "Warp drive",
                                                    "action": "REMOVE", "metrics": []}))
    assert code == 1 and "unknown ablated part 'Warp drive'" in err
    assert "eight_bit" in err and out == ""


def test_jsonl_from_stdin_and_the_written_preset(tmp_path):
    rows = [{"name": "rank grid", "ablated_part": "Projection rank (r)", "action": "REPLACE",
             "replacement": ["4", "128"], "metrics": ["Perplexity", "GLUE"]},
            {"name": "no 8 bit", "ablated_part": "8-bit optimizers", "action": "REMOVE",
             "metrics": ["Memory (GB)"]}]
    text = "".join(json.dumps(r) + "\n" for r in rows)
    code, stdout, err = dry_run("-", stdin=text)
    assert code == 0, err
    assert len(stdout.splitlines()) == 3 * 3  # baseline (rank 128 is it), rank 4, no 8-bit
    out = tmp_path / "mine.yaml"
    code, _, err = run_in_process(tmp_path, "-", "--out", out, "--seeds", "2",
                                  module="ablate.plan", stdin=text)
    assert code == 0, err
    assert out.read_text().startswith("# @package _global_\n")
    body = yaml.safe_load(out.read_text())
    assert body["ablation"]["variants"] == {"baseline": [], "rank_4": ["optimizer.rank=4"],
                                            "no_eight_bit": ["toggles.eight_bit=false"]}
    assert body["ablation"]["not_measured"] == ["GLUE"]
    assert body["ablation"]["seeds"] == [0, 1]
    assert len(jobs(body)) == 3 * 2
    # Claims given on the command line are the preset's, as its variants name them.
    code, _, err = run_in_process(tmp_path, "-", "--out", out, "--claim", "rank_4 worse baseline",
                                  "--claim", "no_eight_bit equivalent baseline 0.05",
                                  module="ablate.plan", stdin=text)
    assert code == 0, err
    assert yaml.safe_load(out.read_text())["ablation"]["claims"] == [
        {"variant": "rank_4", "against": "baseline", "expect": "worse"},
        {"variant": "no_eight_bit", "against": "baseline", "expect": "equivalent", "margin": 0.05}]


def test_mixed_optimizers_and_bad_actions_are_refused():
    with pytest.raises(PlanError, match="adalomo and galore_adamw"):
        preset(parse_markdown("### a\n- **Ablated Part**: NMF\n- **Action**: REMOVE\n"
                              "### b\n- **Ablated Part**: Rank\n- **Action**: REPLACE\n"
                              "- **Replacement**:\n  - 4\n"), "p", 3)
    with pytest.raises(PlanError, match="cannot be removed"):
        preset(parse_markdown("### a\n- **Ablated Part**: Rank\n- **Action**: REMOVE\n"), "p", 3)
    with pytest.raises(PlanError, match="allowed are random projection"):
        preset(parse_markdown("### a\n- **Ablated Part**: projection method\n"
                              "- **Action**: REPLACE\n- **Replacement**:\n  - fourier\n"), "p", 3)


# Wordings a planner might use -> the component, or the start of the error it must give.
WORDINGS = [
    ("Adam-style variance estimate", "adaptive_lr"),
    ("Adaptive learning rate mechanism (second-order moment estimation)", "adaptive_lr"),
    ("the second-moment estimate (variance)", "adaptive_lr"),
    ("adaptive LR", "adaptive_lr"),
    ("AdaLomo's grouped update normalization", "grouped_norm"),
    ("Update normalisation", "grouped_norm"),
    ("the factored (Adafactor) state", "nmf"),
    ("Non-negative matrix factorisation", "nmf"),
    ("NMF of the second moment", "nmf"),
    ("SVD-based subspace", "projection"),
    ("Gradient projection method (SVD)", "projection"),
    ("low-rank gradient projection", "projection"),
    ("Choice of projection matrices", "projection"),
    ("projection type", "projection"),
    ("PCA", "projection"),
    ("Subspace change frequency (T)", "update_proj_gap"),
    ("projector refresh period", "update_proj_gap"),
    ("update interval T", "update_proj_gap"),
    ("rank r of the projector", "rank"),
    ("GaLore rank", "rank"),
    ("dimension of the subspaces", "rank"),
    ("GaLore's scaling factor alpha", "scale"),
    ("Using only one projection matrix (P or Q)", "two_sided"),
    ("two-sided projection", "two_sided"),
    ("eight bit optimizer states", "eight_bit"),
    ("quantized Adam states", "eight_bit"),
    ("learning rate warmup", "unknown ablated part 'learning rate warmup'; known components, "
                             "closest first: adaptive_lr, "),
    ("learning rate", "unknown ablated part 'learning rate'; known components, closest first: "
                      "adaptive_lr, "),
    ("dropout", "unknown ablated part 'dropout'"),
    ("batch size", "unknown ablated part 'batch size'"),
    ("weight decay", "unknown ablated part 'weight decay'"),
    ("gradient clipping", "unknown ablated part 'gradient clipping'; known components, closest "
                          "first: projection, "),
    ("momentum (first moment)", "unknown ablated part 'momentum (first moment)'"),
    ("GaLore", "unknown ablated part 'GaLore' (it has no word but fillers and optimizer names)"),
    ("rank and scale", "ambiguous ablated part 'rank and scale': it fits "),
    ("adaptive learning rate and grouped normalization", "ambiguous ablated part "),
    # issue 23: APOLLO, Adam-mini, Muon
    ("APOLLO's norm-growth limiter", "limiter"),
    ("Norm growth limiter (NL)", "limiter"),
    ("channel-wise vs tensor-wise scaling", "channel_wise"),
    ("scaling granularity (channel-wise)", "channel_wise"),
    ("Adam-mini's partition strategy", "partition"),
    ("Hessian-based block partition", "partition"),
    ("number of Newton-Schulz iterations", "ns_steps"),
    ("Muon's Nesterov momentum", "nesterov"),
    ("APOLLO rank", "rank"),
]


@pytest.mark.parametrize("part, expected", WORDINGS)
def test_wordings_find_their_component_or_fail_naming_candidates(part, expected):
    if expected in {component.name for component in COMPONENTS}:
        assert component_for(part).name == expected, scores(part)
    else:
        with pytest.raises(PlanError) as error:
            component_for(part)
        assert str(error.value).startswith(expected)
        assert "\n" not in str(error.value)


def test_scores_are_the_documented_weighted_jaccard():
    # "learning rate" has lr of the alias "adaptive learning rate" (adapt, lr; each token used
    # by adaptive_lr alone, weight 1) and lacks adapt: 1 / 2.
    assert scores("learning rate")["adaptive_lr"] == pytest.approx(1 / 2)
    # "NMF of the second moment" against adaptive_lr's "second moment": second and moment are
    # used by adaptive_lr and nmf (weight 1/2 each), nmf by nmf only (weight 1).
    assert scores("NMF of the second moment")["adaptive_lr"] == pytest.approx(1 / 2)
    assert scores("NMF of the second moment")["nmf"] == 1
    # A word of the part that another alias of the component has counts as a match:
    # "low-rank projection" has lowrank and proj, "gradient projection" has gradient.
    assert scores("low-rank gradient projection")["projection"] == 1
    # A parenthetical counts when it matches and is not held against a part when it does not.
    assert scores("Grouped update normalization (Section 3.2)")["grouped_norm"] == 1
    assert scores("rank and scale")["rank"] == scores("rank and scale")["scale"] == 1 / 2


def md(part: str, action: str, *replacement: str) -> str:
    lines = "".join(f"  - {word}\n" for word in replacement)
    return (f"### study\n- **Ablated Part**: {part}\n- **Action**: {action}\n"
            + (f"- **Replacement**:\n{lines}" if replacement else "") + "- **Metrics**: Loss\n")


def jsonl(**row) -> str:
    return json.dumps({"name": "x", "ablated_part": "rank", "action": "REPLACE",
                       "replacement": ["4"], **row}) + "\n"


# Files the bad-input table reads (written into an otherwise empty working directory).
FILES = {
    "plan.md": md("Projection rank (r)", "REPLACE", "4"),
    "empty.md": "",
    "prose.md": "# A plan\nWe will ablate the rank.\n",
    "binary.md": bytes(range(256)),
    "utf16.md": "### a\n".encode("utf-16"),
    "not_object.jsonl": "[1, 2]\n",
    "string_line.jsonl": '"rank"\n',
    "not_json.jsonl": "{name: rank}\n",
    "missing_action.jsonl": jsonl() + json.dumps({"name": "y", "ablated_part": "rank"}) + "\n",
    "replacement_string.jsonl": jsonl(replacement="4"),
    "action_number.jsonl": jsonl(action=3),
    "rank_json_float.jsonl": jsonl(replacement=[4.5]),
    "unknown_key.jsonl": json.dumps({"name": "x", "ablated_part": "rank", "action": "REPLACE",
                                     "replacements": ["4"]}) + "\n",
    "metrics_null.jsonl": jsonl(metrics=["Loss", None]),
    "rank_128.md": md("rank", "REPLACE", "128"),
    "rank_-4.md": md("rank", "REPLACE", "-4"),
    "rank_0.md": md("rank", "REPLACE", "0"),
    "rank_4.5.md": md("rank", "REPLACE", "4.5"),
    "rank_four.md": md("rank", "REPLACE", "four"),
    "T_0.md": md("Subspace change frequency (T)", "REPLACE", "0"),
    "T_2.5.md": md("Subspace change frequency (T)", "REPLACE", "2.5"),
    "alpha_-1.md": md("Scale factor (alpha)", "REPLACE", "-1"),
    "alpha_0.md": md("Scale factor (alpha)", "REPLACE", "0"),
    "alpha_nan.md": md("Scale factor (alpha)", "REPLACE", "nan"),
    "alpha_inf.md": md("Scale factor (alpha)", "REPLACE", "inf"),
    "eight_bit_4.md": md("8-bit optimizers", "REPLACE", "4"),
    "projection_fourier.md": md("projection method", "REPLACE", "fourier"),
    "rank_remove.md": md("rank", "REMOVE"),
    "action_delete.md": md("rank", "DELETE", "4"),
    "replace_no_list.md": md("rank", "REPLACE"),
    "empty_part.md": md("", "REMOVE"),
    "unknown_part.md": md("Warp drive", "REMOVE"),
    "ambiguous_part.md": md("rank and scale", "REPLACE", "4"),
    "two_optimizers.md": md("NMF", "REMOVE") + md("rank", "REPLACE", "4"),
    "broken.yaml": "a: [\n",
    "scalar.yaml": "hello\n",
    "list.yaml": "- 1\n- 2\n",
    "params_list.yaml": "hydra:\n  sweeper:\n    params: [1, 2]\n",
    "variant_undefined.yaml": "ablation:\n  variants: {baseline: []}\n"
                              "hydra:\n  sweeper:\n    params:\n"
                              "      ablation.variant: baseline,x\n",
    "variant_not_list.yaml": "ablation:\n  variants: {baseline: toggles.nmf=false}\n",
    "list_sweep.yaml": "hydra:\n  sweeper:\n    params:\n      trainer.seed: [0, 1]\n",
    "unknown_interpolation.yaml": "hydra:\n  sweeper:\n    params:\n      trainer.seed: ${nope}\n",
    "bad_sweep.yaml": "hydra:\n  sweeper:\n    params:\n      trainer.seed: \"0,,]\"\n",
    "hand_written.yaml": "# @package _global_\n# a preset written by hand\n",
    "a_directory.yaml/": None,
    "a_directory.md/": None,
}

BAD_INPUTS = [  # (argv, what the one error line must contain)
    (["plan.md", "--seeds", "0"], "argument --seeds: '0': must be an integer from 1 to 1000"),
    (["plan.md", "--seeds", "-2"], "argument --seeds: '-2': must be an integer from 1 to 1000"),
    (["plan.md", "--seeds", "two"], "argument --seeds: 'two': must be an integer from 1 to 1000"),
    (["plan.md", "--seeds", "1.5"], "argument --seeds: '1.5': must be an integer from 1 to 1000"),
    ([], "the following arguments are required: plan"),
    (["plan.md", "--colour"], "unrecognized arguments: --colour"),
    (["plan.md", "--name", "../elsewhere"], "--name: '../elsewhere': letters, digits, _ and -"),
    (["plan.md", "--out", "preset.txt"], "--out: 'preset.txt': a preset is NAME.yaml, NAME of "),
    (["plan.md", "--out", "no/such/dir/p.yaml"],
     "cannot write no/such/dir/p.yaml: No such file or directory"),
    (["plan.md", "--out", "/proc/no_such_dir/p.yaml"], "cannot write /proc/no_such_dir/p.yaml"),
    (["plan.md", "--out", "a_directory.yaml"], "cannot write a_directory.yaml: Is a directory"),
    (["plan.md", "--out", "hand_written.yaml"], "hand_written.yaml exists and is not an imported "
                                                "plan: choose another --name or --out"),
    (["plan.md", "--out", ".yaml"], "--out: '.yaml': a preset is NAME.yaml"),
    (["plan.md", "--seeds", "99999999999999999999"], "must be an integer from 1 to 1000"),
    (["no_such_plan.md"], "plan 'no_such_plan.md': no such file"),
    ([""], "plan '': a directory, not a file"),
    (["a_directory.md"], "plan 'a_directory.md': a directory, not a file"),
    (["binary.md"], "plan 'binary.md': not a text file"),
    (["utf16.md"], "plan 'utf16.md': not a text file"),
    (["empty.md"], "the plan has no ablation"),
    (["prose.md"], "the plan has no ablation"),
    (["-"], "the plan has no ablation"),  # empty standard input
    (["not_object.jsonl"], "line 1: '[1, 2]' is a JSON list; each line must be one JSON object"),
    (["string_line.jsonl"], "line 1: '\"rank\"' is a JSON str; each line must be one JSON object"),
    (["not_json.jsonl"], "line 1: not JSON (Expecting property name"),
    (["missing_action.jsonl"], "line 2: missing action (need name, ablated_part, action"),
    (["replacement_string.jsonl"], "line 1: replacement is '4'; it must be a list of strings "
                                   "or numbers"),
    (["metrics_null.jsonl"], "line 1: metrics is ['Loss', None]; it must be a list of strings"),
    (["action_number.jsonl"], "line 1: action is 3; it must be a string"),
    (["unknown_key.jsonl"], "line 1: unknown key 'replacements' (allowed: name, ablated_part, "
                            "action, replacement, metrics)"),
    (["rank_json_float.jsonl"], "replacement 4.5 for rank (optimizer.rank): allowed are positive "
                                "integers"),
    (["rank_128.md"], "every replacement in the plan is the baseline's value "
                      "(optimizer.rank=128): there is nothing to compare"),
    (["rank_-4.md"], "replacement '-4' for rank (optimizer.rank): allowed are positive integers"),
    (["rank_0.md"], "replacement '0' for rank (optimizer.rank): allowed are positive integers"),
    (["rank_4.5.md"], "replacement '4.5' for rank (optimizer.rank): allowed are positive integ"),
    (["rank_four.md"], "replacement 'four' for rank (optimizer.rank): allowed are positive in"),
    (["T_0.md"], "replacement '0' for update_proj_gap (optimizer.update_proj_gap): allowed are "
                 "positive integers"),
    (["T_2.5.md"], "replacement '2.5' for update_proj_gap"),
    (["alpha_-1.md"], "replacement '-1' for scale (optimizer.scale): allowed are positive numbers"),
    (["alpha_0.md"], "replacement '0' for scale (optimizer.scale): allowed are positive numbers"),
    (["alpha_nan.md"], "replacement 'nan' for scale (optimizer.scale): allowed are positive num"),
    (["alpha_inf.md"], "replacement 'inf' for scale (optimizer.scale): allowed are positive num"),
    (["eight_bit_4.md"], "replacement '4' for eight_bit (toggles.eight_bit): allowed are none "
                         "(REMOVE it instead)"),
    (["projection_fourier.md"], "replacement 'fourier' for projection (toggles.projection): "
                                "allowed are random projection, "),
    (["rank_remove.md"], "study: rank cannot be removed, only replaced"),
    (["action_delete.md"], "study: action 'DELETE' (allowed: REMOVE, or REPLACE with a "),
    (["replace_no_list.md"], "study: action 'REPLACE' (allowed: REMOVE, or REPLACE with a "),
    (["empty_part.md"], "unknown ablated part '' (it has no word but fillers and optimizer "),
    (["unknown_part.md"], "unknown ablated part 'Warp drive'; known components, closest first"),
    (["ambiguous_part.md"], "ambiguous ablated part 'rank and scale': it fits"),
    (["two_optimizers.md"], "the plan ablates parts of adalomo and galore_adamw"),
    (["broken.yaml", "--dry-run"], "broken.yaml is not valid YAML (expected the node content"),
    (["scalar.yaml", "--dry-run"], "scalar.yaml is not a preset: a YAML mapping with "
                                   "hydra.sweeper.params is expected, not a str"),
    (["list.yaml", "--dry-run"], "list.yaml is not a preset"),
    (["params_list.yaml", "--dry-run"], "hydra.sweeper.params is [1, 2]; it must be a dict"),
    (["variant_undefined.yaml", "--dry-run"], "ablation.variant 'x' is swept but not among "
                                              "ablation.variants (baseline)"),
    (["variant_not_list.yaml", "--dry-run"], "ablation.variants.baseline is 'toggles.nmf=false'; "
                                             "it must be a list of key=value"),
    (["list_sweep.yaml", "--dry-run"], "hydra.sweeper.params: trainer.seed: [0, 1] is not a sweep"),
    (["unknown_interpolation.yaml", "--dry-run"], "hydra.sweeper.params: Interpolation key "
                                                  "'nope' not found"),
    (["bad_sweep.yaml", "--dry-run"], "hydra.sweeper.params: trainer.seed: '0,,]' is not a sweep"),
    (["scalar.yaml"], "scalar.yaml is a preset already: add --dry-run to list its jobs"),
    # issue 26 claims
    (["plan.md", "--claim", "rank_8 worse baseline"], "ablation.claims[0].variant=rank_8: "
     "not a variant of the preset (allowed: baseline, rank_4)"),
    (["plan.md", "--claim", "rank_4 equivalent baseline"], "ablation.claims[0].margin=None: "
     "expect=equivalent needs a margin > 0"),
    (["plan.md", "--claim", "rank_4 worse"], "--claim 'rank_4 worse': expected 'VARIANT "
     "EXPECT AGAINST [MARGIN]'"),
    (["plan.md", "--claim", "rank_4 equivalent baseline small"], "margin 'small' is not a number"),
    (["scalar.yaml", "--dry-run", "--claim", "a worse b"], "--claim: scalar.yaml is a preset "
     "already"),
]


@pytest.fixture
def plan_files(tmp_path, monkeypatch):
    """A working directory holding FILES; yields a listing of it and of conf/ablation."""
    for name, content in FILES.items():
        if content is None:
            (tmp_path / name).mkdir()
        elif isinstance(content, bytes):
            (tmp_path / name).write_bytes(content)
        else:
            (tmp_path / name).write_text(content)
    monkeypatch.chdir(tmp_path)
    return lambda: sorted(map(str, [*tmp_path.rglob("*"), *(config_dir() / "ablation").iterdir()]))


@pytest.mark.parametrize("argv, expected", BAD_INPUTS, ids=[" ".join(a) for a, _ in BAD_INPUTS])
def test_bad_input_is_one_line_exit_1_and_writes_nothing(argv, expected, plan_files, capsys,
                                                         monkeypatch):
    before = plan_files()
    monkeypatch.setattr("sys.stdin", io.StringIO(""))
    with pytest.raises(SystemExit) as exit:
        main(argv)
    # sys.exit(message) prints the message on stderr and exits with status 1.
    assert isinstance(exit.value.code, str), exit.value.code
    captured = capsys.readouterr()
    stderr = captured.err + exit.value.code + "\n"
    assert stderr.count("\n") == 1 and stderr.startswith("ablate.plan: error: "), stderr
    assert expected in stderr and "Traceback" not in stderr
    assert captured.out == ""
    assert plan_files() == before


@pytest.mark.parametrize("argv, expected", [
    (["plan.md", "--seeds", "0"], "argument --seeds: '0': must be an integer from 1 to 1000"),
    (["binary.md", "--dry-run"], "plan 'binary.md': not a text file"),
])
def test_bad_input_from_a_real_process(argv, expected, plan_files, tmp_path):
    before = plan_files()
    result = ablate(tmp_path, *argv, module="ablate.plan", check=False)
    assert result.returncode == 1 and result.stdout == ""
    assert result.stderr.count("\n") == 1 and expected in result.stderr, result.stderr
    assert plan_files() == before


def test_inline_replacements_and_rewriting_an_imported_preset(tmp_path):
    text = ("### ranks\n- **Ablated Part**: GaLore rank r\n- **Action**: REPLACE\n"
            "- **Replacement**: 4, 8\n")
    body, _ = preset(parse_markdown(text), "p", seeds=1)
    assert body["ablation"]["variants"] == {"baseline": [], "rank_4": ["optimizer.rank=4"],
                                            "rank_8": ["optimizer.rank=8"]}
    (tmp_path / "plan.md").write_text(text)
    out = tmp_path / "p.yaml"
    for _ in range(2):  # the second run replaces the preset the first one wrote
        main([str(tmp_path / "plan.md"), "--out", str(out), "--seeds", "1"])
    assert yaml.safe_load(out.read_text())["ablation"]["variants"] == body["ablation"]["variants"]


def test_global_normalization_is_a_replacement_of_grouped_normalization():
    text = ("### global\n- **Ablated Part**: AdaLomo's grouped update normalization\n"
            "- **Action**: REPLACE\n- **Replacement**: Global update normalization\n")
    body, _ = preset(parse_markdown(text), "p", seeds=1)
    assert body["ablation"]["variants"] == {
        "baseline": [], "grouped_norm_global": ["toggles.grouped_norm=global"]}


def test_optimizer_baselines_follow_conf_and_one_seed_expands(tmp_path, monkeypatch):
    """An optimizer key's baseline is conf/optimizer/'s value; a one-seed preset is a sweep
    of one value, as Hydra expands it."""
    (tmp_path / "optimizer").mkdir()
    yaml_text = (config_dir() / "optimizer" / "galore_adamw.yaml").read_text()
    (tmp_path / "optimizer" / "galore_adamw.yaml").write_text(
        yaml_text.replace("\nrank: 128\n", "\nrank: 64\n"))
    monkeypatch.setattr(components, "config_dir", lambda: tmp_path)
    components.optimizer_defaults.cache_clear()
    try:
        body, _ = preset(parse_markdown(md("rank", "REPLACE", "4")), "p", seeds=1)
    finally:
        components.optimizer_defaults.cache_clear()
    assert body["ablation"]["baseline"] == ["optimizer.rank=64"]
    assert [job[1:] for job in jobs(body)] == [["optimizer.rank=64", "trainer.seed=0"],
                                               ["optimizer.rank=4", "trainer.seed=0"]]


def test_a_part_galore_and_apollo_share_is_apollos_beside_an_apollo_part(tmp_path):
    """rank alone: GaLore's (as before APOLLO); rank beside the limiter: APOLLO's, with
    APOLLO's baseline values (rank 128, random projection)."""
    galore, _ = preset(parse_markdown(md("rank", "REPLACE", "4")), "p", 1)
    assert galore["defaults"] == [{"override /optimizer": "galore_adamw"}]
    body, _ = preset(parse_markdown(md("rank", "REPLACE", "4") + md("norm-growth limiter",
                                                                   "REMOVE")
                                    + md("random projection", "REPLACE", "svd")), "p", 1)
    assert body["defaults"] == [{"override /optimizer": "apollo"}]
    assert body["ablation"]["baseline"] == ["optimizer.rank=128", "toggles.limiter=true",
                                            "toggles.projection=random"]
    assert body["ablation"]["variants"] == {
        "baseline": [], "rank_4": ["optimizer.rank=4"], "no_limiter": ["toggles.limiter=false"],
        "projection_svd": ["toggles.projection=svd"]}
    muon, _ = preset(parse_markdown(md("Newton-Schulz steps", "REPLACE", "3")
                                    + md("Nesterov momentum", "REMOVE")), "p", 1)
    assert muon["defaults"] == [{"override /optimizer": "muon"}]
    with pytest.raises(PlanError, match="the plan ablates parts of apollo and muon"):
        preset(parse_markdown(md("norm-growth limiter", "REMOVE") + md("nesterov", "REMOVE")),
               "p", 1)
