"""Fault and latency injection by rule, as a layer of the chain (chain.py; see layer.py, rules.py)."""

from .layer import FaultLayer
from .rulefile import RuleFileWatcher, read_rules
from .rules import FaultRule, RuleError, parse_rule, parse_rules_file

__all__ = ["FaultLayer", "FaultRule", "RuleError", "RuleFileWatcher", "parse_rule",
           "parse_rules_file", "read_rules"]
