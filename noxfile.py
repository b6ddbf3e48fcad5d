"""Developer and CI sessions for zag-async.

Every session runs under the interpreter nox itself runs under (``./dev`` puts
nox in ``.venv``), so there is exactly one Python to reason about. TaskFlow, the
peer library the benchmarks compare against, is installed only in ``bench``.
"""

from __future__ import annotations

from pathlib import Path

import nox

nox.options.reuse_existing_virtualenvs = True
nox.options.sessions = ["tests", "lint", "typecheck"]

ROOT = Path(__file__).parent
LINT_PATHS = ("zag_async", "tests", "examples", "benchmarks")

# What the docs session needs: mkdocstrings reads the package's source without
# importing it, so the package's own dependencies are not installed there.
DOCS_REQUIREMENTS = ("mkdocs>=1.6", "mkdocstrings[python]>=0.26")

# The peer library and what its SQL persistence backend needs for scenario S4.
PEER_REQUIREMENTS = ("taskflow", "SQLAlchemy", "alembic", "psycopg2-binary", "kazoo")

# The durable-workflow and task-queue peers of scenario PEERS (benchmarks/peers.py), pinned
# so figures stay comparable between runs; bench-only, never the package's dependencies.
PEERS_REQUIREMENTS = ("dbos==3.4.0", "celery==5.7.0")


@nox.session
def tests(session: nox.Session) -> None:
    """Run the test suite (arguments after ``--`` go to pytest).

    ``-- -m "not services"`` runs the fast core suite: no servers, no
    subprocess-heavy suites (``./dev test -m "not services"`` says the same).
    """
    session.install("-e", ".[dev]")
    session.run("pytest", *session.posargs)


@nox.session
def lint(session: nox.Session) -> None:
    """Lint everything with ruff; check formatting of the package only."""
    session.install("ruff")
    # ruff reports a missing path as an error, and some folders arrive later.
    paths = [p for p in LINT_PATHS if (ROOT / p).exists()]
    session.run("ruff", "check", *paths)
    session.run("ruff", "format", "--check", "zag_async")


@nox.session
def typecheck(session: nox.Session) -> None:
    """Type-check the package with mypy --strict (configured in pyproject.toml)."""
    session.install(".[all]", "mypy")
    session.run("mypy")


@nox.session
def docs(session: nox.Session) -> None:
    """Build the documentation site (mkdocs.yml) with warnings as errors, into ``site/``.

    The guide is the README, the API reference is generated from the docstrings;
    a broken link, reference or docstring fails the build.
    """
    session.install(*DOCS_REQUIREMENTS)
    session.run("mkdocs", "build", "--strict", *session.posargs)


@nox.session
def demo(session: nox.Session) -> None:
    """Run the built-in demonstration flow."""
    session.install(".")
    session.run("python", "-m", "zag_async", "demo")


@nox.session
def bench(session: nox.Session) -> None:
    """Benchmark zag-async against TaskFlow in one process (``-- --quick``, ``-- --only S1``).

    Scenario PEERS also runs DBOS Transact and Celery (``PEERS_REQUIREMENTS``) beside zag.

    ``-- --baseline REV`` also measures the zag side at git revision REV (exported with
    ``git archive``) beside this tree, interleaved, and prints current/baseline ratios.
    """
    session.install(".[postgres,amqp,zookeeper]", *PEER_REQUIREMENTS, *PEERS_REQUIREMENTS)
    session.run("python", "benchmarks/run.py", *session.posargs)
