"""Graph-build tier: every init_*_wf built from fakes, its nodes and connections checked, nothing run.

Each build takes a fraction of a second (placeholder files stand in for templates, bundles and
images: building a graph validates paths but reads no file), so wiring mistakes show in the fast
tier instead of minutes into an end-to-end run. `pytest -m graph` runs this tier alone.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

import pytest
from nipype.interfaces.base import isdefined
from nipype.interfaces.utility import IdentityInterface
from nipype.pipeline import engine as pe

from bids_harmonize.bids.records import ImageRecord
from bids_harmonize.sites.assign import UNKNOWN_SITE, SiteAssignment
from bids_harmonize.sites.signature import ProtocolSignature, ScannerSignature
from bids_harmonize.workflows.harmonize import init_harmonize_wf
from bids_harmonize.workflows.participant import HarmonizationPlan, TemplateFiles, init_participant_wf
from bids_harmonize.workflows.preproc import PREPROC_OUTPUTS, init_preproc_wf

pytestmark = pytest.mark.graph

PREPROC_NODES = {"inputnode", "conform", "n4", "register", "mask_to_native", "mask_record", "scale", "outputnode"}
SINK_FROM_PREPROC = {"native_preproc", "template_preproc", "native_mask", "transform"}
Port = tuple[str, str]  # (node path inside the workflow, field)


# ----------------------------------------------------------------------------- fakes
@pytest.fixture
def fakes(tmp_path: Path) -> dict[str, Path]:
    """Empty placeholders where the builders check that a file or folder exists."""
    paths = {name: tmp_path / f"{name}.nii.gz" for name in ("template_T1w", "template_T2w", "mask", "reference")}
    for path in paths.values():
        path.touch()
    paths["bundle"] = tmp_path / "models" / "T1w"
    paths["bundle"].mkdir(parents=True)
    paths["out"] = tmp_path / "out"
    return paths


def template(fakes: dict[str, Path]) -> TemplateFiles:
    images = {contrast: str(fakes[f"template_{contrast}"]) for contrast in ("T1w", "T2w")}
    return TemplateFiles(name="MNI152NLin2009cSym", resolution=2, images=images, mask=str(fakes["mask"]))


def plan(fakes: dict[str, Path], style: str = "site", seed: int = 0) -> HarmonizationPlan:
    return HarmonizationPlan(
        bundle_dir=str(fakes["bundle"]),
        bundle_sha256="sha256:weights",
        bundle_sites=("siteA", "siteB"),
        target_site="siteA",
        target_scale=(0.0, 1000.0),
        style=style,
        seed=seed,
        reference_image=str(fakes["reference"]) if style == "reference" else None,
        card_sha256="sha256:card",
    )


def assignment(subject: str, site: str, suffix: str = "T1w") -> SiteAssignment:
    relpath = f"sub-{subject}/anat/sub-{subject}_{suffix}.nii.gz"
    image = ImageRecord(Path("/bids") / relpath, relpath, subject, None, suffix)
    scanner = ScannerSignature(vendor=None, model=None, field_t=None, unit=None, unit_key=None, software=None)
    return SiteAssignment(image, site, "inferred", "fake", scanner, ProtocolSignature())


def participant_wf(fakes, assignments, plans, **options) -> tuple[pe.Workflow, list[str]]:
    return init_participant_wf(
        assignments=assignments,
        out_dir=fakes["out"],
        template=template(fakes),
        plans=plans,
        provenance={"command_line": ["bids_harmonize"], "start_time": "2026-01-01T00:00:00Z"},
        **options,
    )


# ----------------------------------------------------------------------------- graph reading
def connections(workflow: pe.Workflow) -> dict[Port, Port]:
    """Every connection of the flattened graph: destination port -> source port."""
    prefix = workflow.name + "."
    edges = {}
    for source, target, data in workflow._create_flat_graph().edges(data=True):
        for out_field, in_field in data["connect"]:
            edges[(target.fullname.removeprefix(prefix), in_field)] = (source.fullname.removeprefix(prefix), out_field)
    return edges


def nodes(workflow: pe.Workflow) -> dict[str, pe.Node]:
    return {name: workflow.get_node(name) for name in workflow.list_node_names()}


def origin(workflow: pe.Workflow, port: Port, edges: dict[Port, Port]) -> Port | tuple[str, Any] | None:
    """Where the value at `port` comes from, through identity nodes: a real node's output, a
    value set on an identity node ("value", ...), or None (nothing reaches it)."""
    while port in edges:
        source = edges[port]
        node = workflow.get_node(source[0])
        if not isinstance(node.interface, IdentityInterface):
            return source
        value = getattr(node.inputs, source[1])
        if isdefined(value):
            return ("value", value)
        port = source
    return None


def unwired_inputs(workflow: pe.Workflow) -> list[str]:
    """Inputs of real nodes that are connected to nothing that will hold a value, and mandatory
    inputs neither set nor connected."""
    edges, problems = connections(workflow), []
    for name, node in nodes(workflow).items():
        if isinstance(node.interface, IdentityInterface):
            continue
        for field in node.inputs.copyable_trait_names():
            connected = (name, field) in edges
            if connected and origin(workflow, (name, field), edges) is None:
                problems.append(f"{name}.{field}: connected to an input nothing sets")
            mandatory = node.inputs.traits()[field].mandatory
            if mandatory and not connected and not isdefined(getattr(node.inputs, field)):
                problems.append(f"{name}.{field}: mandatory and neither set nor connected")
    return problems


# ----------------------------------------------------------------------------- init_preproc_wf
@pytest.mark.parametrize("brain_mask", ["deepbet", "template"])
def test_preproc_wf_chains_conform_n4_registration_mask_and_scaling(fakes, brain_mask):
    workflow = init_preproc_wf(
        template_file=str(fakes["template_T1w"]),
        template_mask_file=str(fakes["mask"]),
        brain_mask=brain_mask,
        omp_nthreads=3,
        seed=7,
    )
    edges = connections(workflow)
    learned = brain_mask == "deepbet"
    assert set(workflow.list_node_names()) == PREPROC_NODES | ({"learned_mask"} if learned else set())
    assert {edges[("n4", "in_file")], edges[("register", "in_file")]} == {("conform", "out_file"), ("n4", "out_file")}
    assert edges[("mask_to_native", "reference")] == ("n4", "out_file")  # the mask takes the N4 image's grid
    assert edges[("mask_to_native", "transform")] == ("register", "transform")
    assert edges[("scale", "in_file")] == ("register", "warped")  # scaled on the template grid
    assert {field for (name, field) in edges if name == "outputnode"} == set(PREPROC_OUTPUTS)
    register = workflow.get_node("register")
    assert register.inputs.template == str(fakes["template_T1w"]) and register.inputs.seed == 7
    assert register.n_procs == workflow.get_node("n4").n_procs == 3
    masks = {workflow.get_node(name).inputs.mask for name in ("scale", "mask_to_native")}
    assert masks == {str(fakes["mask"])}
    if learned:  # the network reads the raw conformed image; its mask drives a brain-to-brain registration
        assert edges[("learned_mask", "in_file")] == ("conform", "out_file")
        assert edges[("register", "in_mask")] == ("learned_mask", "out_file")
        assert register.inputs.template_mask == str(fakes["mask"])
        assert edges[("outputnode", "native_mask")] == ("learned_mask", "out_file")
        assert edges[("mask_record", "template_mask")] == ("mask_to_native", "out_file")  # kept for the check
    else:
        assert edges[("outputnode", "native_mask")] == ("mask_to_native", "out_file")
        assert ("register", "in_mask") not in edges


# ----------------------------------------------------------------------------- init_harmonize_wf
@pytest.mark.parametrize(("style", "seed"), [("site", 0), ("random", 11), ("reference", 0)])
def test_harmonize_wf_wires_inference_then_the_way_back_to_the_native_grid(fakes, style, seed):
    workflow = init_harmonize_wf(
        bundle_dir=str(fakes["bundle"]),
        bundle_sha256="sha256:weights",
        target_site="siteA",
        source_site="siteB",
        target_scale=(0.0, 1000.0),
        style=style,
        seed=seed,
        omp_nthreads=2,
        brain_mask=str(fakes["mask"]),
    )
    edges = connections(workflow)
    assert set(workflow.list_node_names()) == {"inputnode", "murd", "to_native", "outputnode"}
    assert workflow.get_node("murd").inputs.brain_mask_file == str(fakes["mask"])  # each image's own map
    assert edges[("murd", "in_file")] == ("inputnode", "model_input")
    assert edges[("to_native", "harmonized")] == ("murd", "out_file")
    assert edges[("to_native", "lookup_file")] == ("murd", "lookup_file")
    # The native map applies to what the template-grid map applied to: the input, or its denoised copy.
    assert edges[("to_native", "model_input")] == ("murd", "lookup_input_file")
    wired = [("native", "native_preproc"), ("native_mask", "native_mask"), ("transform", "transform")]
    for field, source in [*wired, ("source_scale", "scale_file")]:
        assert edges[("to_native", field)] == ("inputnode", source)
    assert edges[("outputnode", "native_harmonized")] == ("to_native", "native_file")
    assert (("murd", "reference_file") in edges) == (style == "reference")
    murd = workflow.get_node("murd").inputs
    assert (murd.style, murd.seed, murd.target_site, murd.source_site) == (style, seed, "siteA", "siteB")
    assert (murd.device, murd.use_gpu) == ("cpu", False)
    assert workflow.get_node("to_native").inputs.target_hi == 1000.0


def test_harmonize_wf_on_a_gpu_is_a_gpu_node_for_multiproc(fakes):
    workflow = init_harmonize_wf(
        bundle_dir=str(fakes["bundle"]),
        bundle_sha256="sha256:weights",
        target_site="siteA",
        source_site="siteB",
        target_scale=(0.0, 1.0),
        device="cuda:1",
    )
    murd = workflow.get_node("murd")
    assert (murd.inputs.device, murd.inputs.use_gpu) == ("cuda:1", True)


# ----------------------------------------------------------------------------- init_participant_wf
@pytest.mark.parametrize("style", ["site", "random", "reference"])
def test_participant_wf_harmonizes_known_sites_and_leaves_the_rest_preprocessed(fakes, style):
    images = [
        assignment("01", "siteA"),
        assignment("02", "siteB"),
        assignment("03", "siteC"),
        assignment("04", UNKNOWN_SITE),
        assignment("01", "siteA", "T2w"),
    ]
    workflow, not_harmonized = participant_wf(fakes, images, {"T1w": plan(fakes, style, seed=5)})
    top = {name.split(".")[0] for name in workflow.list_node_names()}
    preprocs = {f"preproc_sub_{label}" for label in ("01_T1w", "02_T1w", "03_T1w", "04_T1w", "01_T2w")}
    sinks = {name.replace("preproc_", "sink_") for name in preprocs}
    harmonized = {"harmonize_sub_01_T1w", "harmonize_sub_02_T1w"}
    references = {"preproc_reference_T1w"} if style == "reference" else set()
    volumes = {name.replace("preproc_", "volumes_preproc_") for name in preprocs}
    volumes |= {name.replace("harmonize_", "volumes_harmonized_") for name in harmonized}
    assert top == preprocs | sinks | harmonized | references | volumes
    assert [message.split(":")[0] for message in not_harmonized] == [
        "sub-03/anat/sub-03_T1w.nii.gz",
        "sub-04/anat/sub-04_T1w.nii.gz",
    ]
    assert all("--site-table" in message for message in not_harmonized)
    assert unwired_inputs(workflow) == []

    edges = connections(workflow)
    for sink in sinks:
        preproc = sink.replace("sink_", "preproc_")
        assert {field for (name, field) in edges if name == sink} >= SINK_FROM_PREPROC
        assert origin(workflow, (sink, "native_preproc"), edges) == (f"{preproc}.n4", "out_file")
    for name in harmonized:
        sink, preproc = name.replace("harmonize_", "sink_"), name.replace("harmonize_", "preproc_")
        assert origin(workflow, (sink, "native_harmonized"), edges) == (f"{name}.to_native", "native_file")
        assert origin(workflow, (f"{name}.murd", "in_file"), edges) == (f"{preproc}.scale", "out_file")
        # The change is carried to the bias-corrected native image (as the methods text says), denoised
        # (where noise matching applies) inside the image's own native brain mask.
        assert origin(workflow, (f"{name}.to_native", "native"), edges) == (f"{preproc}.n4", "out_file")
        assert origin(workflow, (f"{name}.to_native", "native_mask"), edges)[1] == "out_file"
        reference = origin(workflow, (f"{name}.murd", "reference_file"), edges)
        assert reference == (("preproc_reference_T1w.scale", "out_file") if style == "reference" else None)
    for sink in sinks - {name.replace("harmonize_", "sink_") for name in harmonized}:
        assert not {field for (name, field) in edges if name == sink} & {"native_harmonized", "template_harmonized"}
        assert not isdefined(workflow.get_node(sink).inputs.harmonization)


@pytest.mark.parametrize(
    ("style", "expected"), [("site", "site"), ("random", "random (seed 5)"), ("reference", "reference")]
)
def test_participant_wf_passes_the_plan_to_inference_and_the_sidecar(fakes, style, expected):
    workflow, _ = participant_wf(fakes, [assignment("01", "siteB")], {"T1w": plan(fakes, style, seed=5)}, device="cuda")
    murd = workflow.get_node("harmonize_sub_01_T1w.murd").inputs
    assert murd.brain_mask_file == str(fakes["mask"])  # the template's mask: each image's own intensity map
    assert (murd.style, murd.seed, murd.source_site, murd.target_site) == (style, 5, "siteB", "siteA")
    assert (murd.bundle_dir, murd.bundle_sha256, murd.use_gpu) == (str(fakes["bundle"]), "sha256:weights", True)
    sidecar = workflow.get_node("sink_sub_01_T1w").inputs.harmonization
    assert sidecar["TargetStyle"] == expected and sidecar["ModelBundle"]["CardSHA256"] == "sha256:card"
    if style == "reference":
        reference = workflow.get_node("preproc_reference_T1w.inputnode").inputs.in_file
        assert reference == str(fakes["reference"])


def test_the_sidecar_says_whether_the_image_is_denoised_before_its_map(fakes):
    noisy = dataclasses.replace(plan(fakes), noise_ratios=(("siteA", 0.1), ("siteB", 0.2)))
    images = [assignment("01", "siteB"), assignment("02", "siteA")]
    workflow, _ = participant_wf(fakes, images, {"T1w": noisy})
    matching = {
        subject: workflow.get_node(f"sink_sub_{subject}_T1w").inputs.harmonization["NoiseMatching"]
        for subject in ("01", "02")
    }
    assert matching["01"]["Denoised"] is True and matching["01"]["SourceNoiseToContrast"] == 0.2
    assert matching["02"]["Denoised"] is False  # the target site's own images
    workflow, _ = participant_wf(fakes, images[:1], {"T1w": plan(fakes)})  # a bundle without noise records
    assert "NoiseMatching" not in workflow.get_node("sink_sub_01_T1w").inputs.harmonization


def test_participant_wf_reads_each_image_and_writes_under_out(fakes):
    workflow, _ = participant_wf(fakes, [assignment("01", "siteA", "T2w")], {}, omp_nthreads=4, seed=3)
    assert workflow.get_node("preproc_sub_01_T2w.inputnode").inputs.in_file == "/bids/sub-01/anat/sub-01_T2w.nii.gz"
    assert workflow.get_node("preproc_sub_01_T2w.register").inputs.template == str(fakes["template_T2w"])
    assert workflow.get_node("preproc_sub_01_T2w.register").inputs.seed == 3
    sink = workflow.get_node("sink_sub_01_T2w")
    assert sink.inputs.out_dir == str(fakes["out"]) and sink.inputs.record["relpath"] == "sub-01/anat/sub-01_T2w.nii.gz"
    assert sink.inputs.site["site"] == "siteA" and sink.inputs.resolution == 2
    assert sink.overwrite and sink.run_without_submitting


def test_group_preprocessing_builds_without_a_model(fakes):
    """The group level preprocesses what is missing with the same builder and no plans."""
    images = [assignment("01", "siteA"), assignment("02", "siteB", "T2w")]
    workflow, not_harmonized = participant_wf(fakes, images, {}, name="group_preproc_wf")
    assert workflow.name == "group_preproc_wf" and not_harmonized == []
    assert not any(name.startswith("harmonize_") for name in workflow.list_node_names())
    assert unwired_inputs(workflow) == []


def test_a_plan_for_another_contrast_leaves_this_one_preprocessed(fakes):
    workflow, not_harmonized = participant_wf(fakes, [assignment("01", "siteA", "T2w")], {"T1w": plan(fakes)})
    assert not_harmonized == []  # no model for T2w is the run's warning, not a per-image one
    top = {name.split(".")[0] for name in workflow.list_node_names()}
    assert top == {"preproc_sub_01_T2w", "sink_sub_01_T2w", "volumes_preproc_sub_01_T2w"}


def test_participant_wf_measures_the_preprocessed_and_the_harmonized_image_inside_the_native_mask(fakes):
    """Issue 18: tissue volumes per image, as nodes of the participant workflow (so they spread
    over a Slurm array like the rest), from the native-grid images and the native brain mask."""
    images = [assignment("01", "siteB"), assignment("02", "siteC", "T2w")]
    workflow, _ = participant_wf(fakes, images, {"T1w": plan(fakes)}, omp_nthreads=3)
    edges = connections(workflow)
    for image, contrast in (("sub_01_T1w", "T1w"), ("sub_02_T2w", "T2w")):
        node = workflow.get_node(f"volumes_preproc_{image}")
        assert (node.inputs.contrast, node.inputs.num_threads, node.n_procs) == (contrast, 3, 3)
        assert origin(workflow, (f"volumes_preproc_{image}", "in_file"), edges) == (f"preproc_{image}.n4", "out_file")
        mask = origin(workflow, (f"volumes_preproc_{image}", "mask"), edges)
        assert mask == (f"preproc_{image}.learned_mask", "out_file")
        assert edges[(f"sink_{image}", "native_preproc_volumes")] == (f"volumes_preproc_{image}", "out_file")
    harmonized = "volumes_harmonized_sub_01_T1w"
    assert origin(workflow, (harmonized, "in_file"), edges) == ("harmonize_sub_01_T1w.to_native", "native_file")
    assert origin(workflow, (harmonized, "mask"), edges) == ("preproc_sub_01_T1w.learned_mask", "out_file")
    assert edges[("sink_sub_01_T1w", "native_harmonized_volumes")] == (harmonized, "out_file")
    assert "volumes_harmonized_sub_02_T2w" not in workflow.list_node_names()  # no T2w model: not harmonized
    assert unwired_inputs(workflow) == []


def test_participant_wf_without_volumes_has_no_volume_nodes(fakes):
    workflow, _ = participant_wf(fakes, [assignment("01", "siteA")], {"T1w": plan(fakes)}, volumes=False)
    assert not any(name.startswith("volumes_") for name in workflow.list_node_names())


def test_the_unwired_check_finds_a_dangling_input(fakes):
    """The check the builds above pass would catch a connection from an input nothing sets."""
    workflow, _ = participant_wf(fakes, [assignment("01", "siteA")], {"T1w": plan(fakes)})
    reference = init_preproc_wf(
        template_file=str(fakes["template_T1w"]), template_mask_file=str(fakes["mask"]), name="preproc_reference_T1w"
    )  # in_file left unset on purpose
    harmonize = workflow.get_node("harmonize_sub_01_T1w")
    workflow.connect(reference, "outputnode.model_input", harmonize, "inputnode.reference_file")
    assert unwired_inputs(workflow) == ["preproc_reference_T1w.conform.in_file: connected to an input nothing sets"]
