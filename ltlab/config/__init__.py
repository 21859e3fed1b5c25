"""The run config at the bottom of the layers: its schema, static checks and errors.

Nothing here imports another ltlab package; checks that need the method / model / sampler
registries are in ltlab.methods.resolve (``from_dict``, ``load``, ``validate``).
"""
from ltlab.config.errors import ConfigError
from ltlab.config.schema import (
                                 ADDED_LATER,
                                 AMP,
                                 DATASETS,
                                 DEMO_DEFAULTS,
                                 DEVICES,
                                 FIELDS,
                                 PROFILES,
                                 SCHEDULES,
                                 TYPES,
                                 VAL_SPLITS,
                                 RunConfig,
                                 check_choice,
                                 coerce_value,
                                 load_yaml,
                                 parse_override,
                                 unknown_key,
                                 validate_fields,
)

__all__ = ["ADDED_LATER", "ConfigError", "RunConfig", "FIELDS", "TYPES", "DATASETS", "DEMO_DEFAULTS", "DEVICES", "SCHEDULES", "PROFILES", "AMP",
           "VAL_SPLITS", "check_choice", "coerce_value", "load_yaml", "parse_override", "unknown_key",
           "validate_fields"]
