"""From what a user typed to a checked RunConfig: the config layer's schema plus the registries.

``from_dict`` merges dataclass defaults < the method recipe's defaults (the paper's hyperparameters,
possibly per dataset) < the user's values, lets the recipe compress its schedule for a shorter run
(ltlab.config.epochs), coerces types and validates: first every field on its own
(ltlab.config.validate_fields), then the choices only the registries know (method, model, sampler)
and the recipe's own checks. It sits here, above ltlab.config and the registries, so that the
schema never imports what it validates against.
"""
from __future__ import annotations

from pathlib import Path

from ltlab.config import (  # noqa: F401
    ADDED_LATER,
    DEMO_DEFAULTS,
    FIELDS,
    TYPES,
    ConfigError,
    RunConfig,
    check_choice,
    coerce_value,
    load_yaml,
    parse_override,
    unknown_key,
    validate_fields,
)
from ltlab.config.checks import IGNORED, IGNORED_EXTRA
from ltlab.methods.base import METHODS
from ltlab.methods.samplers import SAMPLERS
from ltlab.models import MODELS


def validate(cfg: RunConfig) -> RunConfig:
    """validate_fields, then the registry choices and the method's own checks."""
    validate_fields(cfg)
    check_choice("method", cfg.method, tuple(METHODS))
    check_choice("model", cfg.model, tuple(MODELS))
    check_choice("sampler", cfg.sampler, tuple(SAMPLERS))
    METHODS[cfg.method].check(cfg)
    return cfg


def from_dict(d: dict | None = None, **overrides) -> RunConfig:
    """Build a RunConfig: defaults < method recipe defaults < d < overrides."""
    user = dict(d or {})
    user.update(overrides)
    for key in user:
        if key not in FIELDS:
            raise unknown_key(key)
    method = user.get("method", FIELDS["method"].default)
    if not isinstance(method, str):
        raise ConfigError(f"config key 'method' = {method!r}: expected str")
    if method not in METHODS:
        raise ConfigError(f"config key 'method' = {method!r}: allowed values are {', '.join(METHODS)}")
    recipe = METHODS[method]
    user = demo_defaults(user, recipe)
    merged = dict(recipe.defaults(user))
    paper_epochs = merged.get("epochs", FIELDS["epochs"].default)
    user_extra = user.pop("extra", None)
    if user_extra is not None and not isinstance(user_extra, dict):
        raise ConfigError(f"config key 'extra' = {user_extra!r} ({type(user_extra).__name__}): expected a mapping "
                          f"of method knobs, e.g. extra: {{focal_gamma: 2.0}}")
    extra = dict(merged.pop("extra", {}))
    extra.update(user_extra or {})
    merged.update(user)
    merged["extra"] = extra
    # a shortened run gets the recipe's schedule compressed, not its 200-epoch milestones
    merged = recipe.resolve(merged, {**user, "extra": user_extra or {}}, paper_epochs)
    values = {}
    for key, value in merged.items():
        if key not in FIELDS:
            raise unknown_key(key)
        values[key] = coerce_value(key, value, TYPES[key])
    cfg = validate(RunConfig(**values))
    if set(FIELDS) - set(user) - {"extra"} - set(ADDED_LATER):   # (extra was popped from user above)
        # a partial config is what someone typed: a key it sets that this run ignores is refused; a
        # complete one is a saved config.yaml, whose unused keys hold their defaults by necessity
        check_given(cfg, user, user_extra or {})
    return cfg




def demo_defaults(user: dict, recipe) -> dict:
    """A demo run's unset model and length (ltlab.config.schema.DEMO_DEFAULTS), as if the user had
    typed them, so the recipe's schedule is compressed to them. A stage-two run on a stage one
    keeps its stage one's model and its own length; a post-hoc run trains no epochs."""
    if user.get("dataset", FIELDS["dataset"].default) != "demo" or user.get("stage1_run"):
        return user
    out = dict(user)
    out.setdefault("model", DEMO_DEFAULTS["model"])
    if recipe.trains:
        out.setdefault("epochs", DEMO_DEFAULTS["epochs"])
    return out


def load(path=None, overrides=()) -> RunConfig:
    d = load_yaml(path) if path else {}
    if not isinstance(d.get("extra") or {}, dict):
        raise ConfigError(f"config key 'extra' = {d['extra']!r} ({type(d['extra']).__name__}) in '{path}': expected "
                          "a mapping of method knobs, e.g. extra: {focal_gamma: 2.0}")
    extra = dict(d.get("extra") or {})
    for text in overrides:
        key, value = parse_override(text)
        if key.startswith("extra."):
            extra[key[len("extra."):]] = value
        else:
            d[key] = value
    if extra:
        d["extra"] = extra
    return from_dict(d)


def coerce(config) -> RunConfig:
    """Accept a RunConfig, a dict, or a YAML path."""
    if isinstance(config, RunConfig):
        return validate(config)
    if isinstance(config, (str, Path)):
        return load(config)
    if isinstance(config, dict):
        return from_dict(config)
    raise ConfigError(f"config of type {type(config).__name__}: expected RunConfig, dict or YAML path")


def check_given(cfg, user: dict, user_extra: dict) -> None:
    """Refuse a key the user gave that this run would silently ignore."""
    for key, ignored, why in IGNORED:
        if key in user and user[key] != FIELDS[key].default and ignored(cfg):
            raise ConfigError(f"config key '{key}' = {user[key]!r} is ignored by this run (dataset '{cfg.dataset}', "
                              f"method '{cfg.method}', schedule '{cfg.schedule}'): {why}; drop it")
    if user.get("stage1_run"):
        if not METHODS[cfg.method].takes_stage1:
            stagers = [n for n, r in METHODS.items() if r.takes_stage1]
            raise ConfigError(f"config key 'stage1_run' = {user['stage1_run']!r} is ignored by the one-stage method "
                              f"'{cfg.method}'; drop it, or use a two-stage method: {', '.join(stagers)}")
    for key, ignored, why in IGNORED_EXTRA:
        if key in user_extra and ignored(cfg, cfg.extra):
            raise ConfigError(f"extra key '{key}' = {user_extra[key]!r} is ignored by this run (method "
                              f"'{cfg.method}', sampler '{cfg.sampler}'): {why}; drop it")
