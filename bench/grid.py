"""Grid files: load, validate, and give back a typed, frozen ``Grid``.

A grid is plain YAML data, read with a safe loader and never evaluated. Every error
names the file, the place inside it (``attacks[2].alpha``), the bad value and what is
allowed, and is raised before anything runs or is written.
"""

from __future__ import annotations

import dataclasses
import itertools
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal, Union

import pydantic
import yaml
from pydantic import BaseModel, ConfigDict, Field

from bench.core import (
    ARCHS,
    ATTACKS,
    DATASETS,
    DEFENSES,
    EXTRA_METRICS,
    ParamError,
    Registry,
    Target,
    TrainConfig,
    UnknownNameError,
    content_hash,
    dataset_spec,
    did_you_mean,
    fraction_count,
)

AXES = ("dataset", "arch", "attack", "poison_ratio", "target_mode", "target_label", "defense", "clean_fraction", "seed")


class GridError(ValueError):
    """An invalid grid file; ``str(error)`` is the whole message for the user."""


# ---- the file's shape -------------------------------------------------------------

Ratio = pydantic.confloat(gt=0.0, le=1.0)
MethodEntry = Union[str, dict[str, Any]]


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class TargetEntry(_Strict):
    mode: Literal["all2one", "all2all"] = "all2one"
    label: pydantic.conint(ge=0) = 0


class Resources(_Strict):
    """Per-trial Ray resources; fractional GPUs share a device."""

    cpu: pydantic.confloat(gt=0) = 1.0
    gpu: pydantic.confloat(ge=0) = 0.0


class DataSettings(_Strict):
    root: str | None = None  # default: $BENCH_DATA_DIR, else ./data
    download: bool = True


class GridFile(_Strict):
    name: str = Field(pattern=r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")
    seeds: list[pydantic.conint(ge=0)] = Field(min_length=1)
    datasets: list[str] = Field(min_length=1)
    archs: list[str] = Field(min_length=1)
    attacks: list[MethodEntry] = Field(min_length=1)
    poison_ratios: list[Ratio] = Field(min_length=1)
    target: TargetEntry | list[TargetEntry] = TargetEntry()
    defenses: list[MethodEntry] = Field(min_length=1)
    clean_fractions: list[Ratio] = Field(min_length=1)
    train: dict[str, Any] = Field(default_factory=dict)
    resources: Resources = Resources()
    exclude: list[dict[str, Any]] = Field(default_factory=list)
    data: DataSettings = DataSettings()
    metrics: list[str] = Field(default_factory=list)  # optional extra metrics: mia, sharpness


# ---- the validated grid -------------------------------------------------------------


@dataclass(frozen=True)
class MethodChoice:
    """A registered method with validated parameters (its ``Params`` dataclass, defaults filled in).

    ``label`` is the display name: the grid name, plus the parameters that tell it apart
    when the grid lists the same method more than once (``blended(alpha=0.1)``).
    """

    name: str
    params: Any
    label: str = dataclasses.field(default="", compare=False)

    @property
    def params_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self.params)


def _labelled(choices: list[MethodChoice]) -> tuple[MethodChoice, ...]:
    """Give each choice its label: the bare name when the name is unique in the list."""
    labelled = []
    for choice in choices:
        siblings = [c for c in choices if c.name == choice.name]
        label = choice.name
        if len(siblings) > 1:
            varying = [k for k, v in choice.params_dict.items() if any(s.params_dict[k] != v for s in siblings)]
            label += "(" + ", ".join(f"{k}={choice.params_dict[k]}" for k in varying) + ")"
        labelled.append(dataclasses.replace(choice, label=label))
    return tuple(labelled)


def _rule_value_matches(rule_value: Any, value: Any) -> bool:
    if isinstance(value, MethodChoice):
        return rule_value in (value.name, value.label)
    if isinstance(value, float) and isinstance(rule_value, (int, float)) and not isinstance(rule_value, bool):
        return math.isclose(value, float(rule_value), rel_tol=1e-9, abs_tol=1e-12)
    return rule_value == value


def rule_matches(rule: dict[str, Any], values: dict[str, Any]) -> bool:
    """True when every key of an ``exclude`` rule matches ``values`` (methods by name or label)."""
    return all(key in values and _rule_value_matches(v, values[key]) for key, v in rule.items())


@dataclass(frozen=True)
class Grid:
    name: str
    path: Path
    seeds: tuple[int, ...]
    datasets: tuple[str, ...]
    archs: tuple[str, ...]
    attacks: tuple[MethodChoice, ...]
    poison_ratios: tuple[float, ...]
    targets: tuple[Target, ...]
    defenses: tuple[MethodChoice, ...]
    clean_fractions: tuple[float, ...]
    train: TrainConfig
    resources: Resources
    exclude: tuple[dict[str, Any], ...]
    data: DataSettings
    metrics: tuple[str, ...]
    text: str  # the file as read

    @property
    def hash(self) -> str:
        """sha256 of the canonical validated content (not of the file's formatting), 16 hex digits."""
        content = {
            "name": self.name,
            "seeds": self.seeds,
            "datasets": self.datasets,
            "archs": self.archs,
            "attacks": [(m.name, m.params_dict) for m in self.attacks],
            "poison_ratios": self.poison_ratios,
            "targets": [dataclasses.asdict(t) for t in self.targets],
            "defenses": [(m.name, m.params_dict) for m in self.defenses],
            "clean_fractions": self.clean_fractions,
            "train": dataclasses.asdict(self.train),
            "exclude": self.exclude,
            "metrics": self.metrics,
        }
        return content_hash(content)


# ---- loading ----------------------------------------------------------------------


def _place(loc: tuple[Any, ...]) -> str:
    text = ""
    for part in loc:
        text += f"[{part}]" if isinstance(part, int) else (f".{part}" if text else str(part))
    return text or "(top level)"


def _fields(model_or_class: Any) -> list[str]:
    if isinstance(model_or_class, type) and issubclass(model_or_class, BaseModel):
        return list(model_or_class.model_fields)
    return [f.name for f in dataclasses.fields(model_or_class)]


def _unknown_key(where: str, key: str, allowed: list[str]) -> str:
    return f"{where}: unknown key {key!r}{did_you_mean(key, allowed)} (allowed: {', '.join(allowed) or 'none'})"


_MODEL_AT: dict[str, type] = {"target": TargetEntry, "resources": Resources, "data": DataSettings}


def _pydantic_message(error: dict[str, Any]) -> str:
    loc = tuple(p for p in error["loc"] if p not in ("list[TargetEntry]", "TargetEntry", "str", "dict[str,any]"))
    where = _place(loc)
    if error["type"] == "extra_forbidden":
        parent = _MODEL_AT.get(str(loc[0])) if len(loc) > 1 else GridFile
        return _unknown_key(_place(loc[:-1]), str(loc[-1]), _fields(parent or GridFile))
    if error["type"] == "missing":
        return f"{where}: required key is missing"
    value = error.get("input")
    return f"{where}: {error['msg']} (got {value!r})"


def _choose(registry: Registry, name: Any, where: str) -> Any:
    if not isinstance(name, str):
        raise GridError(f"{where}: expected a {registry.kind} name, got {name!r}")
    try:
        return registry.get(name)
    except UnknownNameError as error:
        raise GridError(f"{where}: {error}") from None


def _build_params(params_class: type, raw: dict[str, Any], where: str) -> Any:
    allowed = _fields(params_class)
    for key in raw:
        if key not in allowed:
            raise GridError(_unknown_key(where, key, allowed))
    try:
        return pydantic.TypeAdapter(params_class).validate_python(raw)
    except pydantic.ValidationError as error:
        first = error.errors(include_url=False)[0]
        declared = first.get("ctx", {}).get("error")
        if isinstance(declared, ParamError):  # a declared bound or a rule between fields: it names the field
            raise GridError(f"{where}.{declared.field}: {declared}") from None
        field = _place(first["loc"])
        place = f"{where}.{field}" if first["loc"] else where
        message = first["msg"].removeprefix("Value error, ")
        shown = f" (got {first['input']!r})" if first["loc"] else ""
        raise GridError(f"{place}: {message}{shown}") from None


def _method(registry: Registry, entry: MethodEntry, where: str) -> MethodChoice:
    if isinstance(entry, str):
        name, raw = entry, {}
    else:
        if "name" not in entry:
            raise GridError(f"{where}: a method given as a mapping needs a 'name' key")
        raw = {k: v for k, v in entry.items() if k != "name"}
        name = entry["name"]
    method = _choose(registry, name, f"{where}.name" if isinstance(entry, dict) else where)
    return MethodChoice(name, _build_params(method.Params, raw, where))


def _check_unique(items: list[Any], where: str) -> None:
    for i, item in enumerate(items):
        if item in items[:i]:
            raise GridError(f"{where}[{i}]: {item!r} is listed twice")


def _check_exclude(rules: list[dict[str, Any]]) -> None:
    for i, rule in enumerate(rules):
        if not rule:
            raise GridError(f"exclude[{i}]: an empty rule would exclude every cell")
        for key in rule:
            if key not in AXES:
                raise GridError(_unknown_key(f"exclude[{i}]", key, list(AXES)))


def _check_clean_label_ratios(
    attacks: tuple[MethodChoice, ...], ratios: list[float], targets: list[Target], datasets: list[str],
    exclude: list[dict[str, Any]],
) -> None:
    """A clean-label attack draws ``fraction_count(rho, N)`` samples from the target class: it must have them.

    Combinations that an ``exclude`` rule removes whole (a rule on these axes only) are not checked.
    """
    for i, attack in enumerate(attacks):
        if not ATTACKS.get(attack.name).clean_label:
            continue
        for name in datasets:
            counts = dataset_spec(name).train_class_counts
            for rho, target in itertools.product(ratios, targets):
                values = {"dataset": name, "attack": attack, "poison_ratio": rho,
                          "target_mode": target.mode, "target_label": target.label}
                if any(rule_matches(rule, values) for rule in exclude):
                    continue
                if counts and fraction_count(rho, sum(counts)) > counts[target.label]:
                    raise GridError(
                        f"attacks[{i}]: clean-label {attack.name} at poison ratio {rho} needs "
                        f"{fraction_count(rho, sum(counts))} training images of target class {target.label} of {name}, "
                        f"which has {counts[target.label]}; the ratio is a fraction of the whole training set "
                        f"(at most {counts[target.label] / sum(counts):.4f} here)"
                    )


def _parse_yaml(text: str) -> Any:
    try:
        return yaml.safe_load(text)
    except yaml.YAMLError as error:
        mark = getattr(error, "problem_mark", None)
        place = f"line {mark.line + 1}, column {mark.column + 1}" if mark else "somewhere"
        problem = getattr(error, "problem", None) or str(error)
        raise GridError(f"YAML syntax error at {place}: {problem}") from None


def _validate(raw: Any, path: Path, text: str) -> Grid:
    if not isinstance(raw, dict):
        raise GridError(f"(top level): expected a mapping of grid keys, got {type(raw).__name__}")
    try:
        file = GridFile.model_validate(raw)
    except pydantic.ValidationError as error:
        raise GridError(_pydantic_message(error.errors(include_url=False)[0])) from None

    for axis in ("seeds", "datasets", "archs", "poison_ratios", "clean_fractions"):
        _check_unique(list(getattr(file, axis)), axis)
    for i, name in enumerate(file.datasets):
        _choose(DATASETS, name, f"datasets[{i}]")
    for i, name in enumerate(file.archs):
        _choose(ARCHS, name, f"archs[{i}]")
    attacks = [_method(ATTACKS, entry, f"attacks[{i}]") for i, entry in enumerate(file.attacks)]
    defenses = [_method(DEFENSES, entry, f"defenses[{i}]") for i, entry in enumerate(file.defenses)]
    _check_unique(attacks, "attacks")
    _check_unique(defenses, "defenses")

    target_entries = file.target if isinstance(file.target, list) else [file.target]
    targets = [Target(mode=t.mode, label=t.label) for t in target_entries]
    for i, target in enumerate(targets):
        where = f"target[{i}]" if isinstance(file.target, list) else "target"
        for name in file.datasets:
            classes = dataset_spec(name).num_classes
            if target.label >= classes:
                raise GridError(f"{where}.label: {target.label} is not a class of {name} (0..{classes - 1})")
        for j, attack in enumerate(attacks):
            supported = ATTACKS.get(attack.name).label_modes
            if target.mode not in supported:
                raise GridError(
                    f"{where}.mode: attack {attack.name} (attacks[{j}]) does not support {target.mode!r} "
                    f"(supported: {', '.join(supported)})"
                )

    _check_exclude(file.exclude)
    _check_clean_label_ratios(_labelled(attacks), file.poison_ratios, targets, file.datasets, file.exclude)
    _check_unique(list(file.metrics), "metrics")
    for i, name in enumerate(file.metrics):
        if name not in EXTRA_METRICS:
            hint = did_you_mean(name, EXTRA_METRICS)
            raise GridError(f"metrics[{i}]: unknown metric {name!r}{hint} (known: {', '.join(EXTRA_METRICS)})")
    return Grid(
        name=file.name,
        path=path,
        seeds=tuple(file.seeds),
        datasets=tuple(file.datasets),
        archs=tuple(file.archs),
        attacks=_labelled(attacks),
        poison_ratios=tuple(float(r) for r in file.poison_ratios),
        targets=tuple(targets),
        defenses=_labelled(defenses),
        clean_fractions=tuple(float(f) for f in file.clean_fractions),
        train=_build_params(TrainConfig, file.train, "train"),
        resources=file.resources,
        exclude=tuple(file.exclude),
        data=file.data,
        metrics=tuple(file.metrics),
        text=text,
    )


def load_grid(path: str | Path) -> Grid:
    """Read and validate the grid file at ``path``; raise ``GridError`` naming file and place."""
    path = Path(path)
    try:
        text = path.read_text()
    except FileNotFoundError:
        raise GridError(f"{path}: no such grid file") from None
    except OSError as error:
        raise GridError(f"{path}: cannot read the grid file: {error.strerror}") from None
    try:
        return _validate(_parse_yaml(text), path, text)
    except GridError as error:
        raise GridError(f"{path}: {error}") from None
