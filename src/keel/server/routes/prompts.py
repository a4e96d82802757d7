"""The prompt registry routes: prompts, their versions, aliases and approvals.

A prompt lives on the model registry's rows and machinery (see
:mod:`keel.llm.part`), and names are shared between models and prompts, so
its permissions are a model's, on the prompt's name. What each route needs:

===========================================  =======================================
reading a prompt, its versions, aliases,      ``read`` on model NAME
approvals and history
registering a version (the prompt is          ``write`` on model NAME
created on first use)
moving or deleting an alias                   ``write`` on alias NAME@ALIAS (a grant
                                              on NAME covers its aliases), plus the
                                              approvals the alias's policy asks for
approving a version                           ``approve`` on model NAME
===========================================  =======================================

Alias policies are the registry's (``/alias-policies``): protecting
``production`` protects it for models and prompts alike.
"""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Path
from pydantic import BaseModel, Field

from keel.server.context import CallerDep
from keel.server.routes.aliases import add_alias_routes
from keel.transport.wire import to_wire
from keel.validation import MAX_NAME_CHARS

router = APIRouter(tags=["prompts"])

_TEXT_CHARS = 100_000

PromptName = Annotated[str, Path(max_length=MAX_NAME_CHARS, description="a prompt")]

Version = Annotated[int, Path(ge=1, le=2**31 - 1, description="a version number")]


class NewPromptVersion(BaseModel):
    """A prompt's next version: its template, model, parameters, tools and response schema.

    The fields are checked by :func:`keel.llm.entities.prompt_document`, which says
    what is wrong with a bad one.
    """

    template: Any = Field(description="text, or a list of {role, content} chat messages")
    model: Any = Field(description="the model the prompt is written for")
    parameters: Any = None
    tools: Any = None
    response_schema: Any = None
    description: str | None = Field(default=None, max_length=_TEXT_CHARS)


@router.get("/prompts")
def list_prompts(caller: CallerDep) -> Any:
    """The prompts the caller may read, by name."""
    if "api" not in caller.principal.scopes:
        caller.require("read")  # refused with the scope it lacks
    prompts = caller.client.prompts.list()
    return to_wire([p for p in prompts if caller.can("read", "model", p.name)])


@router.get("/prompts/{name}")
def get_prompt(name: PromptName, caller: CallerDep) -> Any:
    """A prompt, with its latest version number and its aliases."""
    caller.require("read", "model", name)
    return to_wire(caller.client.prompts.get_prompt(name))


@router.post("/prompts/{name}/versions", status_code=201)
def register_prompt_version(name: PromptName, body: NewPromptVersion, caller: CallerDep) -> Any:
    """Register the prompt's next version (the prompt is created on first use).

    Registering the document the latest version holds again answers that version.
    """
    caller.require("write", "model", name)
    return to_wire(
        caller.client.prompts.register(
            name,
            template=body.template,
            model=body.model,
            parameters=body.parameters,
            tools=body.tools,
            response_schema=body.response_schema,
            description=body.description,
        )
    )


@router.get("/prompts/{name}/versions")
def list_prompt_versions(name: PromptName, caller: CallerDep) -> Any:
    """Every version of the prompt, oldest first, each with its whole document."""
    caller.require("read", "model", name)
    return to_wire(caller.client.prompts.versions(name))


@router.get("/prompts/{name}/versions/{version}")
def get_prompt_version(name: PromptName, version: Version, caller: CallerDep) -> Any:
    """One version, with its template, model, parameters, tools and response schema."""
    caller.require("read", "model", name)
    return to_wire(caller.client.prompts.get(name, version))


add_alias_routes(
    router,
    "prompts",
    "prompt",
    part=lambda caller: caller.client.prompts,
    by_alias=lambda caller, name, alias: caller.client.prompts.get_by_alias(name, alias),
)
