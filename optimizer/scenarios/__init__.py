"""Scenario files (rigopt.scenario/1) and batch solving (`rigopt solve`)."""

from optimizer.scenarios.batch import FORMATS, default_jobs, solve
from optimizer.scenarios.loader import LoadedScenario, NamedQuery, ScenarioError, expand, load_scenario
from optimizer.scenarios.report import BatchReport, Row, render
from optimizer.scenarios.schema import SCENARIO_SCHEMA, scenario_json_schema

__all__ = ["FORMATS", "SCENARIO_SCHEMA", "BatchReport", "LoadedScenario", "NamedQuery", "Row", "ScenarioError",
           "default_jobs", "expand", "load_scenario", "render", "scenario_json_schema", "solve"]
