"""Serving: deployments with canary and shadow routes, the HTTP app, prediction logs."""

from keel.serving.deployments import (
    Batching,
    Deployment,
    Deployments,
    DeploymentSpec,
    Route,
    build_spec,
    parse_batching,
    parse_route,
)
from keel.serving.runtime import ModelHandle, RoutingTable, Runtime

__all__ = [
    "Batching",
    "Deployment",
    "DeploymentSpec",
    "Deployments",
    "ModelHandle",
    "Route",
    "RoutingTable",
    "Runtime",
    "build_spec",
    "parse_batching",
    "parse_route",
]
