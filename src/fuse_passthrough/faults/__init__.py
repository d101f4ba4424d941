"""Fault and latency injection by rule, as a layer around any Operations object (see layer.py, rules.py)."""

from .layer import FaultInjectingOperations
from .rulefile import RuleFileWatcher, read_rules
from .rules import FaultRule, RuleError, parse_rule, parse_rules_file

__all__ = ["FaultInjectingOperations", "FaultRule", "RuleError", "RuleFileWatcher", "parse_rule",
           "parse_rules_file", "read_rules"]
