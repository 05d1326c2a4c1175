"""Everything a platform project declares, checked together in one run (``batch-platform check``).

The source contracts, the time model, the model specs, the dbt project and the Feast repository each load on their
own; this says, in one report, which of them fail and what one expects of another that the other lacks:

* the source contracts load (:func:`batch_platform.lib.contracts.load_contracts`: named errors, file and field);
* the time model loads over them (every feature, label and frame names a declared table);
* every model spec loads on its own, then all together against the time model (label embargo, cutoff);
* dbt: every table of the dbt source ``raw`` is declared by a contract; every model the time model or a spec names
  (feature tables, label and scored models) is a dbt model;
* Feast: every spec's feature service is defined in the repository; every feature view reads a dbt model's table.

Each check reports what it found or what is missing; the report is not cut short by the first failure. The
callers give the parsed dbt manifest and the Feast repository's objects (parsing them needs dbt and Feast).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any


@dataclass(frozen=True)
class Finding:
    part: str
    ok: bool
    message: str

    def line(self) -> str:
        """One line: the message's lines joined (pydantic's links to its docs left out)."""
        text = " ".join(part.strip() for part in self.message.splitlines()
                        if part.strip() and not part.strip().startswith("For further information"))
        return f"{'ok  ' if self.ok else 'FAIL'} {self.part:<11} {text}"


def attempt(part: str, findings: list[Finding], fn: Callable[[], Any], ok: Callable[[Any], str]) -> Any:
    try:
        value = fn()
    except Exception as e:  # each part reports its own named error; the others still run
        findings.append(Finding(part, False, f"{type(e).__name__}: {e}"))
        return None
    findings.append(Finding(part, True, ok(value)))
    return value


def check_sources(findings: list[Finding], folder: Path) -> dict | None:
    from batch_platform.lib.contracts import load_contracts

    return attempt("sources", findings, lambda: load_contracts(folder),
                    lambda c: f"{len(c)} table(s) in {folder}: {', '.join(sorted(c))}")


def check_time_model(findings: list[Finding]):
    from batch_platform.lib.time_model import load_time_model

    return attempt("time model", findings, load_time_model,
                    lambda tm: f"{tm.source}: {len(tm.spec.features)} feature table(s), {len(tm.spec.labels)} "
                               f"label model(s), {len(tm.spec.frames)} frame(s)")


def check_specs(findings: list[Finding], folder: Path) -> dict | None:
    from batch_platform.lib.specs import load_spec, load_specs

    files = sorted(Path(folder).glob("*.yaml"))
    if not files:
        findings.append(Finding("specs", False, f"no model spec (*.yaml) in {folder}"))
        return None
    each = [attempt("specs", findings, lambda f=f: load_spec(f), lambda s, f=f: f"{f.name}: {s.name} loads")
            for f in files]
    if any(s is None for s in each):
        return None
    return attempt("specs", findings, lambda: load_specs(folder),
                    lambda s: f"{len(s)} spec(s) agree with the time model")


def dbt_models(manifest: dict) -> set[str]:
    return {n["name"] for n in manifest.get("nodes", {}).values() if n.get("resource_type") == "model"}


def dbt_sources(manifest: dict, source: str = "raw") -> set[str]:
    """The tables dbt reads from the source ``source``, but the platform's own (a ``_`` name: the load log)."""
    return {s["name"] for s in manifest.get("sources", {}).values()
            if s.get("source_name") == source and not (s.get("identifier") or s["name"]).startswith("_")}


def check_dbt(findings: list[Finding], manifest: dict | None, contracts: dict | None, tm, specs: dict | None) -> None:
    if manifest is None:
        return
    models = dbt_models(manifest)
    if contracts is not None:
        undeclared = sorted(dbt_sources(manifest) - set(contracts))
        findings.append(Finding("dbt", not undeclared,
                                f"dbt source table(s) raw.{', raw.'.join(undeclared)} have no source contract"
                                if undeclared else f"every raw table dbt reads is declared "
                                f"({len(dbt_sources(manifest))} table(s))"))
    wanted: dict[str, str] = {}
    if tm is not None:
        wanted |= {name: "a feature table of the time model" for name in tm.spec.features}
        wanted |= {name: "a label model of the time model" for name in tm.spec.labels}
        wanted |= {name: "a frame of the time model" for name in tm.spec.frames}
    for spec in (specs or {}).values():
        wanted[spec.label.model] = f"the label model of spec {spec.name}"
        wanted[spec.scoring.model] = f"the scored model of spec {spec.name}"
    missing = {name: why for name, why in wanted.items() if name not in models}
    findings.append(Finding("dbt", not missing, "; ".join(f"{why}: {name!r} is not a dbt model"
                                                          for name, why in sorted(missing.items()))
                            if missing else f"{len(models)} model(s); every model named elsewhere exists"))


def check_feast(findings: list[Finding], services: Iterable[str] | None, view_tables: dict[str, str] | None,
                manifest: dict | None, specs: dict | None) -> None:
    if services is None:
        return
    services = set(services)
    missing = sorted((s.name, s.feature_service) for s in (specs or {}).values()
                     if s.feature_service not in services)
    findings.append(Finding("feast", not missing,
                            "; ".join(f"spec {name}: feature service {svc!r} is not defined in the repository"
                                      for name, svc in missing)
                            if missing else f"{len(services)} feature service(s); every spec's exists"))
    if view_tables is not None and manifest is not None:
        models = dbt_models(manifest)
        unbuilt = sorted((v, t) for v, t in view_tables.items() if t not in models)
        findings.append(Finding("feast", not unbuilt,
                                "; ".join(f"feature view {v} reads table {t!r}, which no dbt model builds"
                                          for v, t in unbuilt)
                                if unbuilt else f"{len(view_tables)} feature view(s), each on a dbt model's table"))


__all__ = ["Finding", "attempt", "check_dbt", "check_feast", "check_sources", "check_specs", "check_time_model"]
