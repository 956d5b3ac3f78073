"""The Responses API with the code_interpreter tool: the request body, its input items, and the response object.

Input items arrive in OpenAI's lenient shapes (a bare string, messages whose ``type`` is optional, earlier output
items replayed as input); unknown fields are ignored so newer SDKs keep working.
"""

from __future__ import annotations

from typing import Annotated, Any, ClassVar, Literal

from pydantic import ConfigDict, Discriminator, Field, Tag, field_validator, model_validator

from cellbox.schemas.common import Metadata, Request, Wire
from cellbox.schemas.containers import ImageOutput, LogsOutput, MemoryLimit, NetworkPolicy

OUTPUTS = "code_interpreter_call.outputs"
INCLUDABLE = frozenset({
    "file_search_call.results", "web_search_call.results", "web_search_call.action.sources",
    "message.input_image.image_url", "computer_call_output.output.image_url", OUTPUTS,
    "reasoning.encrypted_content", "message.output_text.logprobs",
})


# --- input items -------------------------------------------------------------------------------------------------

class InputText(Request):
    type: Literal["input_text"]
    text: str


class InputImage(Request):
    type: Literal["input_image"]
    image_url: str | None = None
    file_id: str | None = None
    detail: Literal["low", "high", "auto", "original"] = "auto"


class InputFile(Request):
    type: Literal["input_file"]
    file_id: str | None = None
    file_url: str | None = None
    file_data: str | None = None
    filename: str | None = None


class OutputTextIn(Request):
    type: Literal["output_text"]
    text: str
    annotations: list[dict[str, Any]] = Field(default_factory=list)


class RefusalIn(Request):
    type: Literal["refusal"]
    refusal: str


ContentPart = Annotated[InputText | InputImage | InputFile | OutputTextIn | RefusalIn, Field(discriminator="type")]


ItemId = Annotated[str, Field(min_length=1, max_length=64)]


class MessageIn(Request):
    type: Literal["message"] = "message"
    id: ItemId | None = None
    role: Literal["user", "assistant", "system", "developer"]
    content: str | list[ContentPart]


class CodeInterpreterCallIn(Request):
    """An earlier ``code_interpreter_call`` replayed as input (as the SDK does when a caller keeps the history);
    ``caller`` and other newer fields are ignored, ``status`` and ``outputs`` may be null."""

    type: Literal["code_interpreter_call"]
    id: ItemId
    code: str | None = None
    container_id: str
    outputs: list[LogsOutput | ImageOutput] | None = None
    status: Literal["in_progress", "interpreting", "completed", "incomplete", "failed"] | None = "completed"


CallId = Annotated[str, Field(min_length=1, max_length=64)]
ItemStatus = Literal["in_progress", "completed", "incomplete"]


class FunctionCallIn(Request):
    """A function call the model made earlier (replayed by the client, or from the stored history)."""

    type: Literal["function_call"]
    id: ItemId | None = None
    call_id: CallId
    name: Annotated[str, Field(min_length=1, max_length=128)]
    arguments: str
    status: ItemStatus | None = None


class FunctionCallOutputIn(Request):
    """What the client's function returned: a string, or a list of text, image and file parts."""

    type: Literal["function_call_output"]
    id: ItemId | None = None
    call_id: CallId
    output: str | list[dict[str, Any]]
    status: ItemStatus | None = None


class ReasoningIn(Request):
    type: Literal["reasoning"]
    id: ItemId | None = None
    summary: list[dict[str, Any]] = Field(default_factory=list)
    content: list[dict[str, Any]] | None = None
    encrypted_content: str | None = None
    status: ItemStatus | None = None


class OtherItemIn(Request):
    """An item of a tool Cellbox does not serve (``web_search_call``, ``file_search_call``, ``mcp_call``, ...),
    replayed from another system's history: kept in the stored input, not shown to the model."""

    model_config = ConfigDict(extra="allow")

    type: Annotated[str, Field(min_length=1, max_length=64)]
    id: ItemId | None = None


class ItemReference(Request):
    type: Literal["item_reference"]
    id: str


_KNOWN_ITEMS = frozenset({"message", "code_interpreter_call", "function_call", "function_call_output", "reasoning",
                          "item_reference"})


def _item_type(value: Any) -> str:
    """Messages may leave out ``type``; every other item names its own; unknown kinds are "other"."""
    kind = value.get("type", "message") if isinstance(value, dict) else getattr(value, "type", "message")
    return str(kind) if kind in _KNOWN_ITEMS else "other"


InputItem = Annotated[
    Annotated[MessageIn, Tag("message")]
    | Annotated[CodeInterpreterCallIn, Tag("code_interpreter_call")]
    | Annotated[FunctionCallIn, Tag("function_call")]
    | Annotated[FunctionCallOutputIn, Tag("function_call_output")]
    | Annotated[ReasoningIn, Tag("reasoning")]
    | Annotated[ItemReference, Tag("item_reference")]
    | Annotated[OtherItemIn, Tag("other")],
    Discriminator(_item_type),
]


# --- tools -------------------------------------------------------------------------------------------------------

class AutoContainer(Request):
    type: Literal["auto"]
    file_ids: Annotated[list[str], Field(max_length=50)] = Field(default_factory=list)
    memory_limit: MemoryLimit | None = None
    network_policy: NetworkPolicy | None = None


class CodeInterpreterTool(Request):
    type: Literal["code_interpreter"]
    container: str | AutoContainer


class FunctionTool(Request):
    """A function the client runs itself: the model may call it, and the response then ends with the call."""

    type: Literal["function"]
    name: Annotated[str, Field(min_length=1, max_length=64, pattern=r"^[A-Za-z0-9_-]+$")]
    description: str | None = None
    parameters: dict[str, Any] | None = None
    strict: bool | None = None


Tool = Annotated[CodeInterpreterTool | FunctionTool, Field(discriminator="type")]


class HostedToolChoice(Request):
    type: Literal["code_interpreter"]


class FunctionChoice(Request):
    type: Literal["function"]
    name: Annotated[str, Field(min_length=1)]


class AllowedTool(Request):
    type: Literal["function", "code_interpreter"]
    name: str | None = None


class AllowedToolsChoice(Request):
    type: Literal["allowed_tools"]
    mode: Literal["auto", "required"]
    tools: Annotated[list[AllowedTool], Field(min_length=1)]


ToolChoice = (Literal["none", "auto", "required"]
              | Annotated[HostedToolChoice | FunctionChoice | AllowedToolsChoice, Field(discriminator="type")])


# --- the request -------------------------------------------------------------------------------------------------

class ConversationRef(Request):
    id: Annotated[str, Field(min_length=1)]


class ReasoningParam(Request):
    effort: Literal["none", "minimal", "low", "medium", "high", "xhigh", "max"] | None = None
    summary: Literal["auto", "concise", "detailed"] | None = None


class TextFormat(Request):
    model_config = ConfigDict(extra="ignore", populate_by_name=True)

    type: Literal["text", "json_schema", "json_object"]
    name: Annotated[str, Field(max_length=64, pattern=r"^[A-Za-z0-9_-]+$")] | None = None
    json_schema: dict[str, Any] | None = Field(None, alias="schema")
    description: str | None = None
    strict: bool | None = None

    @model_validator(mode="after")
    def _schema_has_a_name(self) -> TextFormat:
        if self.type == "json_schema" and (self.name is None or self.json_schema is None):
            raise ValueError("a json_schema format needs a name and a schema")
        return self


class TextParam(Request):
    format: TextFormat = Field(default_factory=lambda: TextFormat(type="text"))
    verbosity: Literal["low", "medium", "high"] | None = None


class CreateResponse(Request):
    model: Annotated[str, Field(min_length=1)]
    input: str | list[InputItem] = Field(default_factory=list)
    instructions: str | None = None
    tools: list[Tool] = Field(default_factory=list)
    tool_choice: ToolChoice = "auto"
    include: list[str] = Field(default_factory=list)
    stream: bool = False
    stream_options: dict[str, Any] | None = None
    previous_response_id: str | None = None
    store: bool = True
    metadata: Metadata | None = None
    parallel_tool_calls: bool = True
    max_output_tokens: Annotated[int, Field(ge=16)] | None = None
    max_tool_calls: Annotated[int, Field(ge=1)] | None = None
    temperature: Annotated[float, Field(ge=0, le=2)] | None = None
    top_p: Annotated[float, Field(ge=0, le=1)] | None = None
    truncation: Literal["auto", "disabled"] | None = None
    reasoning: ReasoningParam | None = None
    text: TextParam | None = None
    user: str | None = None
    safety_identifier: str | None = None
    prompt_cache_key: str | None = None
    service_tier: Literal["auto", "default", "flex", "scale", "priority", "fast"] | None = None
    background: bool | None = None
    conversation: str | ConversationRef | None = None

    @field_validator("tools", mode="before")
    @classmethod
    def _served_tools(cls, tools: Any) -> Any:
        for tool in tools if isinstance(tools, list) else []:
            kind = tool.get("type") if isinstance(tool, dict) else None
            if kind not in ("code_interpreter", "function"):
                raise ValueError(f"tool type {kind!r} is not supported: Cellbox serves 'code_interpreter' and "
                                 "'function' tools")
        return tools

    @field_validator("tool_choice", mode="before")
    @classmethod
    def _known_tool_choice(cls, choice: Any) -> Any:
        if isinstance(choice, dict) and choice.get("type") not in ("code_interpreter", "function", "allowed_tools"):
            raise ValueError("tool_choice must be 'none', 'auto', 'required', {\"type\": \"code_interpreter\"}, "
                             "{\"type\": \"function\", \"name\": ...} or {\"type\": \"allowed_tools\", ...}")
        return choice

    @field_validator("input")
    @classmethod
    def _unique_item_ids(cls, given: str | list[Any]) -> str | list[Any]:
        ids = [item.id for item in given if getattr(item, "id", None)] if isinstance(given, list) else []
        if len(ids) != len(set(ids)):
            raise ValueError("input items must have distinct ids")
        return given

    @field_validator("include")
    @classmethod
    def _known_includes(cls, include: list[str]) -> list[str]:
        unknown = [name for name in include if name not in INCLUDABLE]
        if unknown:
            raise ValueError(f"unknown include value(s) {unknown}; use {OUTPUTS!r}")
        return include

    @property
    def conversation_id(self) -> str | None:
        return self.conversation if isinstance(self.conversation, str | None) else self.conversation.id


# --- the response ------------------------------------------------------------------------------------------------

class CodeInterpreterCall(Wire):
    type: Literal["code_interpreter_call"] = "code_interpreter_call"
    id: str
    status: Literal["in_progress", "interpreting", "completed", "incomplete", "failed"]
    container_id: str
    code: str | None
    outputs: list[LogsOutput | ImageOutput] | None


class ContainerFileCitation(Wire):
    type: Literal["container_file_citation"] = "container_file_citation"
    container_id: str
    file_id: str
    filename: str
    start_index: int
    end_index: int


class OutputText(Wire):
    type: Literal["output_text"] = "output_text"
    text: str
    annotations: list[ContainerFileCitation] = Field(default_factory=list)
    logprobs: list[Any] = Field(default_factory=list)


class OutputMessage(Wire):
    type: Literal["message"] = "message"
    id: str
    role: Literal["assistant"] = "assistant"
    status: Literal["in_progress", "completed", "incomplete"]
    content: list[OutputText]


class FunctionCall(Wire):
    """A call of one of the client's functions: the response ends with it, and the client answers with a
    ``function_call_output`` item carrying the same ``call_id``."""

    type: Literal["function_call"] = "function_call"
    id: str
    call_id: str
    name: str
    arguments: str
    status: ItemStatus


class ReasoningText(Wire):
    type: Literal["reasoning_text"] = "reasoning_text"
    text: str


class Reasoning(Wire):
    """The chain of thought the model server sent (``reasoning`` or ``reasoning_content``), whole, before the call
    or message it led to."""

    type: Literal["reasoning"] = "reasoning"
    id: str
    summary: list[dict[str, Any]] = Field(default_factory=list)
    content: list[ReasoningText] = Field(default_factory=list)
    status: ItemStatus = "completed"


OutputItem = Annotated[CodeInterpreterCall | OutputMessage | FunctionCall | Reasoning, Field(discriminator="type")]


class InputTokensDetails(Wire):
    cached_tokens: int = 0
    cache_write_tokens: int = 0


class OutputTokensDetails(Wire):
    reasoning_tokens: int = 0


class Usage(Wire):
    input_tokens: int = 0
    input_tokens_details: InputTokensDetails = Field(default_factory=InputTokensDetails)
    output_tokens: int = 0
    output_tokens_details: OutputTokensDetails = Field(default_factory=OutputTokensDetails)
    total_tokens: int = 0

    def __add__(self, other: Usage) -> Usage:
        return Usage(
            input_tokens=self.input_tokens + other.input_tokens,
            input_tokens_details=InputTokensDetails(
                cached_tokens=self.input_tokens_details.cached_tokens + other.input_tokens_details.cached_tokens),
            output_tokens=self.output_tokens + other.output_tokens,
            output_tokens_details=OutputTokensDetails(
                reasoning_tokens=self.output_tokens_details.reasoning_tokens
                + other.output_tokens_details.reasoning_tokens),
            total_tokens=self.total_tokens + other.total_tokens,
        )


class ResponseError(Wire):
    code: str
    message: str


class IncompleteDetails(Wire):
    reason: Literal["max_output_tokens", "content_filter"]


class ResponseConversation(Wire):
    id: str


class Response(Wire):
    omit_when_none: ClassVar[frozenset[str]] = frozenset({"usage", "user", "text"})

    id: str
    object: Literal["response"] = "response"
    created_at: int
    status: Literal["completed", "failed", "in_progress", "incomplete", "queued", "cancelled"]
    completed_at: int | None = None
    error: ResponseError | None = None
    incomplete_details: IncompleteDetails | None = None
    instructions: str | None = None
    max_output_tokens: int | None = None
    max_tool_calls: int | None = None
    model: str
    output: list[OutputItem] = Field(default_factory=list)
    parallel_tool_calls: bool = True
    previous_response_id: str | None = None
    reasoning: dict[str, Any] = Field(default_factory=lambda: {"effort": None, "summary": None})
    store: bool = True
    temperature: float | None = 1.0
    text: dict[str, Any] | None = None
    tool_choice: ToolChoice = "auto"
    tools: list[dict[str, Any]] = Field(default_factory=list)
    top_p: float | None = 1.0
    truncation: Literal["auto", "disabled"] = "disabled"
    usage: Usage | None = None
    user: str | None = None
    metadata: dict[str, str] = Field(default_factory=dict)
    background: bool = False
    safety_identifier: str | None = None
    prompt_cache_key: str | None = None
    service_tier: str | None = None
    conversation: ResponseConversation | None = None


class InputMessage(Wire):
    """A stored input message as ``GET /v1/responses/{id}/input_items`` lists it."""

    type: Literal["message"] = "message"
    id: str
    role: Literal["user", "assistant", "system", "developer"]
    status: Literal["completed"] = "completed"
    content: list[dict[str, Any]]
