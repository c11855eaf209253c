"""Static checks of the container recipes (Dockerfile, .dockerignore, Singularity.def).

No Docker, no network: text parsing only. The build and the run in an engine are checked by
.ci/container.sh.
"""

from __future__ import annotations

import fnmatch
import json
import re
import shlex
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
DOCKERFILE = ROOT / "Dockerfile"
DOCKERIGNORE = ROOT / ".dockerignore"
SINGULARITY = ROOT / "Singularity.def"
CI_SCRIPT = ROOT / ".ci" / "container.sh"
THREAD_VARS = (
    "OMP_NUM_THREADS",
    "MKL_NUM_THREADS",
    "OPENBLAS_NUM_THREADS",
    "NUMEXPR_NUM_THREADS",
    "ITK_GLOBAL_DEFAULT_NUMBER_OF_THREADS",
)
SECTIONS = ("help", "labels", "files", "post", "environment", "runscript", "test")

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    tomllib = None


# ---------------------------------------------------------------------------------- parsers
def dockerfile_instructions(text: str) -> list[tuple[str, str]]:
    """(KEYWORD, arguments) per instruction: continuations joined, comment lines dropped."""
    instructions, pending = [], ""
    for raw in text.splitlines():
        line = raw.strip()
        if not line or line.startswith("#"):
            continue  # comments may sit inside a continued instruction too
        if line.endswith("\\"):
            pending += line[:-1] + " "
            continue
        keyword, _, args = (pending + line).partition(" ")
        instructions.append((keyword.upper(), " ".join(args.split())))
        pending = ""
    return instructions


def stages(instructions: list[tuple[str, str]]) -> list[list[tuple[str, str]]]:
    out: list[list[tuple[str, str]]] = []
    for keyword, args in instructions:
        if keyword == "FROM":
            out.append([])
        if out:
            out[-1].append((keyword, args))
    return out


def key_values(args: str) -> dict[str, str]:
    """KEY=VALUE pairs of an ENV or LABEL instruction (quotes as the shell reads them)."""
    pairs = {}
    for token in shlex.split(args):
        key, sep, value = token.partition("=")
        if sep:
            pairs[key] = value
    return pairs


def arg_defaults(instructions: list[tuple[str, str]]) -> dict[str, str]:
    defaults = {}
    for keyword, args in instructions:
        if keyword == "ARG":
            name, _, value = args.partition("=")
            defaults[name] = value
    return defaults


def singularity_sections(text: str) -> tuple[dict[str, str], dict[str, str]]:
    """(header keywords, {section name: dedented body}) of a definition file."""
    header, sections, current = {}, {}, None
    for line in text.splitlines():
        match = re.match(r"^%(\w+)", line)
        if match:
            current = match.group(1)
            sections.setdefault(current, [])
        elif current is not None:
            sections[current].append(line)
        elif ":" in line and not line.lstrip().startswith("#"):
            key, _, value = line.partition(":")
            header[key.strip().lower()] = value.strip()
    return header, {name: textwrap.dedent("\n".join(body)).strip() for name, body in sections.items()}


def apt_packages(script: str) -> set[str]:
    packages = set()
    for match in re.finditer(r"apt-get install ([^&;\n]+)", script):
        packages.update(t for t in match.group(1).split() if not t.startswith("-"))
    return packages


def package_version() -> str:
    text = (ROOT / "bids_harmonize" / "__init__.py").read_text()
    return re.search(r'^__version__ = "([^"]+)"', text, re.M).group(1)


# --------------------------------------------------------------------------------- fixtures
@pytest.fixture(scope="module")
def dockerfile() -> str:
    return DOCKERFILE.read_text()


@pytest.fixture(scope="module")
def instructions(dockerfile: str) -> list[tuple[str, str]]:
    return dockerfile_instructions(dockerfile)


@pytest.fixture(scope="module")
def final_stage(instructions) -> list[tuple[str, str]]:
    return stages(instructions)[-1]


@pytest.fixture(scope="module")
def final_env(final_stage) -> dict[str, str]:
    env: dict[str, str] = {}
    for keyword, args in final_stage:
        if keyword == "ENV":
            env.update(key_values(args))
    return env


@pytest.fixture(scope="module")
def definition() -> tuple[dict[str, str], dict[str, str]]:
    return singularity_sections(SINGULARITY.read_text())


# ------------------------------------------------------------------------------- Dockerfile
def test_parser_joins_continuations_and_drops_comments():
    parsed = dockerfile_instructions("FROM a AS b\n# c\nRUN x \\\n    # inside\n    && y\nENV A=1 \\\n    B=2\n")
    assert parsed == [("FROM", "a AS b"), ("RUN", "x && y"), ("ENV", "A=1 B=2")]


def test_no_syntax_directive(dockerfile):
    # A `# syntax=` line makes BuildKit fetch a frontend image: impossible offline.
    assert not re.search(r"^#\s*syntax\s*=", dockerfile, re.I | re.M)


def test_multi_stage_from_debian_slim_with_venv_copied(instructions, final_stage):
    froms = [args for keyword, args in instructions if keyword == "FROM"]
    assert len(froms) >= 2
    assert all(f.split()[0] == "debian:bookworm-slim" for f in froms)
    copies = [args for keyword, args in final_stage if keyword == "COPY"]
    assert any(c.startswith("--from=builder /opt/venv") for c in copies)
    assert any(c.startswith("--from=builder /opt/templateflow") for c in copies)


def test_entrypoint_is_the_app(final_stage):
    entrypoints = [args for keyword, args in final_stage if keyword == "ENTRYPOINT"]
    assert entrypoints and json.loads(entrypoints[-1]) == ["bids_harmonize"]


def test_runs_as_non_root(final_stage):
    users = [args for keyword, args in final_stage if keyword == "USER"]
    assert users, "the final stage sets no USER"
    user, _, group = users[-1].partition(":")
    assert user not in ("root", "0") and group not in ("root", "0")


def test_oci_labels(final_stage):
    labels: dict[str, str] = {}
    for keyword, args in final_stage:
        if keyword == "LABEL":
            labels.update(key_values(args))
    for key in ("title", "description", "version", "source", "licenses"):
        assert labels.get(f"org.opencontainers.image.{key}"), f"missing OCI label {key}"
    assert labels["org.opencontainers.image.licenses"] == "Apache-2.0"
    assert labels["org.opencontainers.image.title"] == "bids_harmonize"


def test_version_argument_matches_the_package(instructions):
    assert arg_defaults(instructions)["BIDS_HARMONIZE_VERSION"] == package_version(), (
        "update ARG BIDS_HARMONIZE_VERSION in the Dockerfile (and the version label in "
        "Singularity.def) to bids_harmonize.__version__"
    )


def test_torch_variant_argument_selects_cuda_or_cpu(instructions):
    defaults = arg_defaults(instructions)
    assert defaults["TORCH_VARIANT"] == "cuda"  # what `docker run --gpus all` users get
    assert "TORCH_WHEEL_DIR" in defaults and defaults["TORCH_VERSION"]
    torch_runs = [args for keyword, args in instructions if keyword == "RUN" and "TORCH_VARIANT" in args]
    assert torch_runs and "= cpu" in torch_runs[0] and "= cuda" in torch_runs[0]
    assert "torch.version.cuda" in torch_runs[0], "the build must check the torch build it installed"


def test_dependencies_install_before_the_source_is_copied(instructions):
    order = [(k, a) for k, a in instructions]

    def index(predicate) -> int:
        return next(i for i, item in enumerate(order) if predicate(*item))

    torch = index(lambda k, a: k == "RUN" and "TORCH_VARIANT" in a)
    pyproject = index(lambda k, a: k == "COPY" and a.startswith("pyproject.toml"))
    deps = index(lambda k, a: k == "RUN" and "-r /tmp/requirements.txt" in a)
    source = index(lambda k, a: k == "COPY" and a.startswith("bids_harmonize "))
    install = index(lambda k, a: k == "RUN" and "--no-deps" in a and "/src" in a)
    assert torch < pyproject < deps < source < install


def test_pip_uses_the_optional_ca_secret_and_no_cache(instructions):
    for keyword, args in instructions:
        if keyword == "RUN" and "pip install" in args and "--no-build-isolation" not in args:
            assert "--mount=type=secret,id=cabundle" in args and "[ -s /run/secrets/cabundle ]" in args
            assert "--no-cache-dir" in args


def test_templates_baked_at_build_time(instructions):
    env: dict[str, str] = {}
    for keyword, args in stages(instructions)[0]:
        if keyword == "ENV":
            env.update(key_values(args))
        if keyword == "RUN" and "get_template" in args:
            break
    else:
        pytest.fail("no RUN bakes the templates with get_template")
    assert env.get("TEMPLATEFLOW_HOME") == "/opt/templateflow"
    assert "(1, 2)" in args and "'mask', 'brain'" in args and "'T2w'" in args


def test_runtime_environment_is_read_only_friendly(final_env):
    assert final_env["TEMPLATEFLOW_HOME"] == "/opt/templateflow"
    assert final_env["HOME"] == "/tmp"
    assert final_env["MPLCONFIGDIR"].startswith("/tmp/")
    assert final_env["NIPYPE_NO_ET"] == "1"
    assert final_env["PYTHONDONTWRITEBYTECODE"] == "1"
    for name in THREAD_VARS:
        assert final_env[name] == "1"


def test_provenance_variables_are_the_ones_the_app_reads(final_env):
    assert final_env["BIDS_HARMONIZE_CONTAINER_TYPE"] == "docker"
    assert final_env["BIDS_HARMONIZE_CONTAINER_TAG"] == "${CONTAINER_TAG}"
    source = (ROOT / "bids_harmonize" / "bids" / "derivatives.py").read_text()
    assert '"BIDS_HARMONIZE_CONTAINER_TYPE"' in source and '"BIDS_HARMONIZE_CONTAINER_TAG"' in source


# ----------------------------------------------------------------------------- .dockerignore
def test_dockerignore_is_an_allow_list_covering_every_copy(instructions):
    rules = [line.strip() for line in DOCKERIGNORE.read_text().splitlines()]
    rules = [r for r in rules if r and not r.startswith("#")]
    assert rules[0] == "*", ".dockerignore should start by excluding everything"
    allowed = [r[1:].rstrip("/") for r in rules if r.startswith("!")]
    for keyword, args in instructions:
        if keyword != "COPY" or args.startswith("--from"):
            continue
        for source in args.split()[:-1]:
            if "$" in source:
                continue  # the optional torch wheel folder
            assert any(fnmatch.fnmatch(source, pattern) for pattern in allowed), f"{source} is excluded"
    assert "wheels/torch-*.whl" in allowed


def test_package_data_covers_every_non_python_file():
    """The image installs a wheel, not the checkout: a data file that setuptools leaves out works
    in the editable dev install and is missing in the container."""
    if tomllib is None:  # pragma: no cover
        pytest.skip("needs tomllib (Python 3.11)")
    config = tomllib.loads((ROOT / "pyproject.toml").read_text())
    patterns = config.get("tool", {}).get("setuptools", {}).get("package-data", {}).get("bids_harmonize", [])
    package = ROOT / "bids_harmonize"
    shipped = {p for pattern in patterns for p in package.glob(pattern) if p.is_file()}
    data_files = {
        p
        for p in package.rglob("*")
        if p.is_file() and p.suffix not in (".py", ".pyc") and "__pycache__" not in p.parts
    }
    missing = sorted(str(p.relative_to(ROOT)) for p in data_files - shipped)
    assert not missing, (
        f"not installed by `pip install .` (so not in the container): {missing}; add them to "
        "[tool.setuptools.package-data] in pyproject.toml"
    )


# --------------------------------------------------------------------------- Singularity.def
def test_definition_has_every_section(definition):
    header, sections = definition
    assert header["bootstrap"] in ("docker", "docker-daemon")
    assert header["from"] == "debian:bookworm-slim"
    for name in SECTIONS:
        assert sections.get(name), f"%{name} is missing or empty"


def test_definition_runscript_test_and_environment(definition):
    _, sections = definition
    assert sections["runscript"].splitlines()[-1] == 'exec bids_harmonize "$@"'
    assert "bids_harmonize --version" in sections["test"]
    environment = sections["environment"]
    assert "export BIDS_HARMONIZE_CONTAINER_TYPE=singularity" in environment
    assert "export TEMPLATEFLOW_HOME=/opt/templateflow" in environment
    assert "export NIPYPE_NO_ET=1" in environment
    for name in THREAD_VARS:
        assert f"export {name}=" in environment
    assert "BIDS_HARMONIZE_CONTAINER_TAG" in sections["post"]


def test_definition_labels(definition):
    _, sections = definition
    labels = dict(line.split(None, 1) for line in sections["labels"].splitlines() if line.strip())
    assert labels["org.opencontainers.image.licenses"] == "Apache-2.0"
    assert labels["org.opencontainers.image.version"] == package_version()
    assert labels["org.opencontainers.image.title"] == "bids_harmonize"


def test_definition_files_match_the_docker_context(definition, instructions):
    _, sections = definition
    sources = {line.split()[0] for line in sections["files"].splitlines() if line.strip()}
    copied = {
        source
        for keyword, args in instructions
        if keyword == "COPY" and not args.startswith("--from")
        for source in args.split()[:-1]
        if "$" not in source and source != ".dockerignore"
    }
    assert sources == copied


def test_post_mirrors_the_dockerfile(definition, instructions):
    _, sections = definition
    post = sections["post"]
    runs = " ".join(args for keyword, args in instructions if keyword == "RUN")
    assert apt_packages(post) == apt_packages(runs)
    defaults = arg_defaults(instructions)
    assert f'TORCH_VERSION="${{TORCH_VERSION:-{defaults["TORCH_VERSION"]}}}"' in post
    assert f'TORCH_VARIANT="${{TORCH_VARIANT:-{defaults["TORCH_VARIANT"]}}}"' in post
    assert f"TORCH_CPU_INDEX_URL:-{defaults['TORCH_CPU_INDEX_URL']}" in post
    assert f"PIP_VERSION={defaults['PIP_VERSION']}" in post
    bake = next(a for k, a in instructions if k == "RUN" and "get_template" in a)
    bake_code = re.search(r'python -c "([^"]+)"', bake).group(1)
    assert bake_code in post, "the two recipes bake different templates"
    requirements = re.search(r'python -c "(import tomllib[^"]+)"', runs).group(1)
    assert requirements.replace("/src/", "/opt/src/") in post
    for step in ("--no-deps --no-build-isolation", "torch.version.cuda", 'chmod -R a+rX "$TEMPLATEFLOW_HOME"'):
        assert step in post and step in runs


def test_ci_script_is_valid_bash():
    text = CI_SCRIPT.read_text()
    assert "set -euo pipefail" in text and "trap cleanup EXIT" in text
    subprocess.run(["bash", "-n", str(CI_SCRIPT)], check=True)
