"""The Responses API loop: ask the model, run the code it writes in a container, feed the output back, repeat
until it answers in text; every step is a wire event (§6.3 of the reference), whether the client streams or not.

``start`` checks everything that can be checked up front, so a bad request is a plain 4xx and leaves nothing
behind. After that, failures end the response cleanly (``status: failed`` with an error) and keep what it made.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import contextlib
import logging
import mimetypes
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any

from cellbox.errors import CellboxError, InvalidInput, NotFound, UpstreamRejected
from cellbox.ids import (
    call_id,
    function_call_id,
    function_item_id,
    item_id,
    message_id,
    now,
    reasoning_id,
    response_id,
)
from cellbox.sandbox.workspace import safe_filename
from cellbox.schemas.containers import ContainerFile, CreateContainer, LogsOutput
from cellbox.schemas.responses import (
    OUTPUTS,
    AllowedToolsChoice,
    AutoContainer,
    CodeInterpreterCall,
    CodeInterpreterCallIn,
    CodeInterpreterTool,
    ContainerFileCitation,
    CreateResponse,
    FunctionCall,
    FunctionCallIn,
    FunctionCallOutputIn,
    FunctionChoice,
    FunctionTool,
    HostedToolChoice,
    IncompleteDetails,
    InputFile,
    InputImage,
    ItemReference,
    MessageIn,
    OtherItemIn,
    OutputMessage,
    OutputText,
    Reasoning,
    ReasoningIn,
    ReasoningParam,
    ReasoningText,
    Response,
    ResponseConversation,
    ResponseError,
    TextParam,
    Usage,
)
from cellbox.services.arguments import CodeStream, code_from_arguments
from cellbox.services.citations import cite
from cellbox.services.cluster import Cluster
from cellbox.services.conversation import (
    call_messages,
    chat_messages,
    displayed,
    function_tool,
    image_key,
    python_tool,
    tool_call_id,
    tool_result,
)
from cellbox.services.conversations import Conversations
from cellbox.services.files import Files
from cellbox.services.history import History
from cellbox.services.upstream import (
    ArgumentsDelta,
    CallStarted,
    ReasoningDelta,
    TextDelta,
    ToolCall,
    Turn,
    Upstream,
)
from cellbox.store.pages import Order, Page

log = logging.getLogger(__name__)

CALL_STATUS = {"completed": "completed", "failed": "completed", "timeout": "incomplete",
               "out_of_memory": "failed", "crashed": "failed"}
INCOMPLETE = {"length": "max_output_tokens", "content_filter": "content_filter"}


def shown(item: dict[str, Any], include: list[str]) -> dict[str, Any]:
    """An output item as a caller sees it: code outputs only when asked for with ``include``."""
    if item.get("type") == "code_interpreter_call" and OUTPUTS not in include:
        return {**item, "outputs": None}
    return item


def shown_response(response: dict[str, Any], include: list[str]) -> dict[str, Any]:
    return {**response, "output": [shown(item, include) for item in response.get("output") or []]}


def shown_event(event: dict[str, Any], include: list[str]) -> dict[str, Any]:
    """A stream event as a caller sees it. Events are made whole, so one kept for a replay can be shown with the
    replay's own ``include``; only an item or a response carries code outputs."""
    if "item" in event:
        return {**event, "item": shown(event["item"], include)}
    if "response" in event:
        return {**event, "response": shown_response(event["response"], include)}
    return event


@dataclass
class _Call:
    item: CodeInterpreterCall
    index: int  # in response.output
    call: ToolCall | None = None
    code: CodeStream = field(default_factory=CodeStream)


@dataclass
class _FunctionCall:
    """A call of a client's function: announced, its arguments streamed, then handed to the client."""

    item: FunctionCall
    index: int
    call: ToolCall | None = None


@dataclass
class _Reasoning:
    item: Reasoning
    index: int


@dataclass
class _Message:
    item: OutputMessage
    index: int
    text: str = ""


@dataclass
class Run:
    """One response being made: its request, the growing response object, and the conversation so far."""

    project: str
    body: CreateResponse
    response: Response
    inputs: list[dict[str, Any]]
    messages: list[dict[str, Any]]
    container_id: str | None = None
    interpreter: bool = False  # the code_interpreter tool is offered (as ``python``)
    functions: dict[str, FunctionTool] = field(default_factory=dict)  # the client's, by name
    auto: AutoContainer | None = None
    made_container: bool = False
    show_images: bool = False  # displayed figures go back to the model (a vision model)
    conversation_id: str | None = None  # its inputs and outputs are appended there when it ends
    whole: bool = False  # answered as one body when it ends (a plain POST): nobody can see it before
    stored: bool = False  # its start is stored, so its end updates that row
    lost_container: str | None = None  # the conversation's container expired: the model has yet to be told
    tool_results: dict[str, str] = field(default_factory=dict)
    generated: dict[str, ContainerFile] = field(default_factory=dict)  # by path: files the code wrote
    calls_made: int = 0
    refused: bool = False  # a call was refused: later turns offer no tool
    sequence: int = 0
    message: _Message | None = None
    thought: _Reasoning | None = None  # the reasoning item being streamed
    calls: list[_Call | _FunctionCall] = field(default_factory=list)  # this turn's, in the model's order
    finished: bool = False

    def event(self, kind: str, **fields: Any) -> dict[str, Any]:
        self.sequence += 1
        return {"type": kind, "sequence_number": self.sequence - 1, **fields}

    def snapshot(self) -> dict[str, Any]:
        """The response as it stands, whole: whoever shows it filters it by their ``include``."""
        return self.response.model_dump()

    def item(self, model: CodeInterpreterCall | OutputMessage | FunctionCall | Reasoning) -> dict[str, Any]:
        return model.model_dump()

    def is_function(self, name: str) -> bool:
        """A call for the client (not run here): one of its functions, or any call when there is no interpreter."""
        return name in self.functions or not self.interpreter


class Responses:
    def __init__(self, history: History, conversations: Conversations, cluster: Cluster, files: Files,
                 upstream: Upstream, max_tool_calls: int, timeout: float, vision: str = "auto") -> None:
        self._history = history
        self._conversations = conversations
        self._cluster = cluster
        self._files = files
        self._upstream = upstream
        self._max_tool_calls = max_tool_calls
        self._timeout = timeout
        self._vision = vision
        self._closing: set[asyncio.Task[None]] = set()

    # --- reading -----------------------------------------------------------------------------------------------

    async def get(self, project: str, rid: str, include: list[str]) -> dict[str, Any]:
        return shown_response(await self._history.get(project, rid), include)

    async def delete(self, project: str, rid: str) -> None:
        await self._history.delete(project, rid)

    async def input_items(self, project: str, rid: str, limit: int, order: Order, after: str | None) -> Page:
        return await self._history.input_items(project, rid, limit, order, after)

    # --- starting ----------------------------------------------------------------------------------------------

    async def start(self, project: str, body: CreateResponse) -> Run:
        """Everything that can fail because of the request, checked before anything is made or streamed."""
        if not self._upstream.configured:
            raise UpstreamRejected("no model server is configured: set CELLBOX_UPSTREAM_BASE_URL "
                                   "(e.g. http://127.0.0.1:11434/v1) to use /v1/responses", "model")
        tool, functions = self._check_tools(body)
        auto = tool.container if tool is not None and isinstance(tool.container, AutoContainer) else None
        if auto is not None:
            self._cluster.check_policy(auto.network_policy, "tools.0.container.network_policy")
        conversation = body.conversation_id
        if conversation is not None and body.previous_response_id:
            raise InvalidInput("previous_response_id and conversation cannot both be given: a conversation "
                               "already holds what came before", "conversation")
        context = (await self._history.context(project, body.previous_response_id)
                   if body.previous_response_id else None)
        earlier = context.items if context else []
        if conversation is not None:
            earlier = await self._conversations.items(project, conversation)
        referenced = await self._referenced(project, body.input, earlier)
        inputs = await self._inputs(project, body.input, has_tool=tool is not None, referenced=referenced)
        _check_calls_answered(earlier + inputs)
        images = await self._images(project, earlier + inputs)
        image_names = await self._image_names(project, earlier + inputs) if tool is not None else {}
        show_images = self._vision == "on" or (self._vision == "auto" and _has_image(earlier + inputs))
        response = Response(
            id=response_id(), created_at=now(), status="in_progress", instructions=body.instructions,
            max_output_tokens=body.max_output_tokens, max_tool_calls=body.max_tool_calls, model=body.model,
            parallel_tool_calls=body.parallel_tool_calls, previous_response_id=body.previous_response_id,
            reasoning=(body.reasoning or ReasoningParam()).model_dump(), store=body.store,
            temperature=1.0 if body.temperature is None else body.temperature,
            top_p=1.0 if body.top_p is None else body.top_p,
            text=(body.text or TextParam()).model_dump(by_alias=True, exclude_none=True),
            tool_choice=body.tool_choice, tools=[t.model_dump(exclude_none=isinstance(t, CodeInterpreterTool))
                                                 for t in body.tools],
            truncation=body.truncation or "disabled", user=body.user, metadata=body.metadata or {},
            safety_identifier=body.safety_identifier, prompt_cache_key=body.prompt_cache_key,
            service_tier=body.service_tier,
            conversation=ResponseConversation(id=conversation) if conversation is not None else None)
        run = Run(project, body, response, inputs,
                  chat_messages(body.instructions, earlier + inputs, context.tool_results if context else {}, images,
                                image_names, show_images),
                  interpreter=tool is not None, functions=functions, auto=auto, show_images=show_images,
                  conversation_id=conversation)
        if tool is not None and auto is None:
            run.container_id = str(tool.container)
            await self._cluster.running(project, run.container_id)  # unknown or expired: 4xx now
        elif auto is not None:
            run.container_id = await self._reusable(run, earlier + inputs)
        try:
            await self._attach(run, tool_files=auto.file_ids if auto else [], images=image_names,
                               items=earlier + inputs)
        except BaseException:
            await self._abandon(run)
            raise
        return run

    @staticmethod
    def _check_tools(body: CreateResponse) -> tuple[CodeInterpreterTool | None, dict[str, FunctionTool]]:
        """The code_interpreter tool (at most one) and the client's functions by name, or a 400 naming the clash."""
        interpreters = [t for t in body.tools if isinstance(t, CodeInterpreterTool)]
        if len(interpreters) > 1:
            raise InvalidInput("give at most one code_interpreter tool", "tools")
        tool = interpreters[0] if interpreters else None
        functions: dict[str, FunctionTool] = {}
        for n, t in enumerate(body.tools):
            if not isinstance(t, FunctionTool):
                continue
            if t.name in functions:
                raise InvalidInput(f"two function tools are named {t.name!r}; names must be distinct",
                                   f"tools.{n}.name")
            if tool is not None and t.name == "python":
                raise InvalidInput("a function tool may not be named 'python' beside code_interpreter: the model is "
                                   "offered code_interpreter under that name", f"tools.{n}.name")
            functions[t.name] = t
        choice = body.tool_choice
        if choice == "required" and not body.tools:
            raise InvalidInput("tool_choice 'required' needs a tool, but tools has none", "tool_choice")
        wanted: list[tuple[str, str | None]] = []
        if isinstance(choice, HostedToolChoice):
            wanted = [("code_interpreter", None)]
        elif isinstance(choice, FunctionChoice):
            wanted = [("function", choice.name)]
        elif isinstance(choice, AllowedToolsChoice):
            wanted = [(t.type, t.name) for t in choice.tools]
        for kind, name in wanted:
            if kind == "code_interpreter" and tool is None:
                raise InvalidInput("tool_choice asks for the code_interpreter tool, but tools has none", "tool_choice")
            if kind == "function" and name not in functions:
                raise InvalidInput(f"tool_choice names the function {name!r}, which tools does not hold",
                                   "tool_choice")
        return tool, functions

    async def _referenced(self, project: str, given: str | list[Any],
                          earlier: list[dict[str, Any]]) -> dict[str, dict[str, Any] | None]:
        """What each ``item_reference`` stands for: an item stored by this project (None: already in the
        conversation through previous_response_id), or a 400."""
        ids = [item.id for item in given if isinstance(item, ItemReference)] if isinstance(given, list) else []
        if not ids:
            return {}
        present = {item.get("id") for item in earlier}
        found: dict[str, dict[str, Any] | None] = {i: None for i in ids if i in present}
        found |= await self._history.find_items(project, [i for i in ids if i not in present])
        for n, item in enumerate(given):
            if isinstance(item, ItemReference) and item.id not in found:
                raise InvalidInput(f"item_reference {item.id!r} names no item stored in this project (items of "
                                   "responses made with store=false are not kept)", f"input.{n}.id")
        return found

    async def stored_items(self, project: str, given: list[Any]) -> list[dict[str, Any]]:
        """Input items as a conversation keeps them (ids given, references resolved, files checked)."""
        return await self._inputs(project, given, has_tool=True,
                                  referenced=await self._referenced(project, given, []))

    async def _inputs(self, project: str, given: str | list[Any], has_tool: bool,
                      referenced: dict[str, dict[str, Any] | None]) -> list[dict[str, Any]]:
        """The request's input items as stored and listed: every item with an id, messages with content parts;
        an item_reference becomes the item it names."""
        if isinstance(given, str):
            return [{"type": "message", "id": message_id(), "role": "user", "status": "completed",
                     "content": [{"type": "input_text", "text": given}]}]
        items = []
        for n, item in enumerate(given):
            if isinstance(item, ItemReference):
                if (stored := referenced[item.id]) is not None:
                    items.append(stored)
                continue
            if isinstance(item, CodeInterpreterCallIn):
                items.append({**item.model_dump(), "status": item.status or "completed"})
                continue
            if isinstance(item, FunctionCallIn):
                items.append({**item.model_dump(), "id": item.id or function_item_id(),
                              "status": item.status or "completed"})
                continue
            if isinstance(item, FunctionCallOutputIn | ReasoningIn):
                dumped = item.model_dump(exclude_none=True)
                items.append({**dumped, "id": item.id or item_id(item.type), "status": item.status or "completed"})
                continue
            if isinstance(item, OtherItemIn):
                items.append({**item.model_dump(exclude_none=True), "id": item.id or item_id(item.type)})
                continue
            assert isinstance(item, MessageIn)
            if isinstance(item.content, list):
                parts = [p.model_dump(exclude_none=True) for p in item.content]
            elif item.role == "assistant":
                parts = [OutputText(text=item.content).model_dump()]
            else:
                parts = [{"type": "input_text", "text": item.content}]
            for k, part in enumerate(item.content if isinstance(item.content, list) else []):
                where = f"input.{n}.content.{k}"
                if isinstance(part, InputFile):
                    parts[k] = await self._input_file(project, part, has_tool, where)
                elif isinstance(part, InputImage) and not part.image_url and not part.file_id:
                    raise InvalidInput("input_image needs an image_url or a file_id", where)
            items.append({"type": "message", "id": item.id or message_id(), "role": item.role,
                          "status": "completed", "content": parts})
        return items

    async def _input_file(self, project: str, part: InputFile, has_tool: bool, where: str) -> dict[str, Any]:
        if not has_tool:
            raise InvalidInput("input_file needs the code_interpreter tool: files are put in its container", where)
        if part.file_url:
            raise InvalidInput("input_file.file_url is not supported (containers have no network); upload the "
                               "file with POST /v1/files and send its file_id", where)
        if part.file_id:
            row = await self._files.get(project, part.file_id)
            return {"type": "input_file", "file_id": row.id, "filename": row.filename}
        if part.file_data and part.filename:
            try:
                base64.b64decode(part.file_data.split(",", 1)[-1], validate=True)
            except (binascii.Error, ValueError):
                raise InvalidInput("input_file.file_data must be base64", where) from None
            # The name the file will have in /mnt/data, which is also what the model is told.
            return {"type": "input_file", "filename": safe_filename(part.filename), "file_data": part.file_data}
        raise InvalidInput("input_file needs a file_id, or file_data with a filename", where)

    async def _images(self, project: str, items: list[dict[str, Any]]) -> dict[str, str]:
        """Data URLs for images sent by file id (the upstream cannot read our Files API)."""
        urls = {}
        for item in items:
            for part in item.get("content") or [] if item.get("type") == "message" else []:
                fid = part.get("file_id") if isinstance(part, dict) and part.get("type") == "input_image" else None
                if fid and fid not in urls and not part.get("image_url"):
                    row, data = await self._files.read(project, fid)
                    mime = mimetypes.guess_type(row.filename)[0] or "image/png"
                    urls[fid] = f"data:{mime};base64,{base64.b64encode(data).decode()}"
        return urls

    async def _image_names(self, project: str, items: list[dict[str, Any]]) -> dict[str, str]:
        """Where each input image will be in /mnt/data, so the code can crop, zoom or measure it (as OpenAI's
        reasoning models do): a file keeps its name, a data URL is named after its digest."""
        names: dict[str, str] = {}
        for item in items:
            for part in item.get("content") or [] if item.get("type") == "message" else []:
                key = image_key(part) if isinstance(part, dict) and part.get("type") == "input_image" else None
                if key is None or key in names:
                    continue
                if key.startswith("sha256:"):
                    mime = part["image_url"][5:].split(";", 1)[0].split(",", 1)[0]
                    names[key] = f"image-{key[7:19]}{mimetypes.guess_extension(mime) or '.png'}"
                else:
                    names[key] = safe_filename((await self._files.get(project, key)).filename)
        return names

    async def _reusable(self, run: Run, items: list[dict[str, Any]]) -> str | None:
        """Auto mode reuses the container of the latest code run in the conversation, while it is running. One
        that has expired (or was deleted) is replaced by a new one when code next runs, and the model is told."""
        for item in reversed(items):
            if item.get("type") == "code_interpreter_call" and item.get("container_id"):
                try:
                    await self._cluster.running(run.project, item["container_id"])
                    return str(item["container_id"])
                except CellboxError:
                    run.lost_container = str(item["container_id"])
                    return None
        return None

    async def _container(self, run: Run) -> str:
        if run.container_id is None:
            auto = run.auto or AutoContainer(type="auto")
            run.container_id = await self._cluster.create(run.project, CreateContainer(
                name=f"auto: {run.response.id}", memory_limit=auto.memory_limit, network_policy=auto.network_policy),
                policy_param="tools.0.container.network_policy")
            run.made_container = True
        return run.container_id

    async def _attach(self, run: Run, tool_files: list[str], images: dict[str, str],
                      items: list[dict[str, Any]]) -> None:
        """Put the tool's files, the input's files and the conversation's images into the container (once: a name
        already there is kept)."""
        attached = [part for item in run.inputs if item["type"] == "message" for part in item["content"]
                    if part.get("type") == "input_file"]
        if not tool_files and not attached and not images:
            return
        cid = await self._container(run)
        tool_rows = [await self._files.get(run.project, fid) for fid in dict.fromkeys(tool_files)]
        wanted = {row.filename for row in tool_rows} | {part["filename"] for part in attached} | set(images.values())
        present = await self._cluster.present(run.project, cid, wanted)
        names = []
        for row in tool_rows:
            if row.filename not in present:
                await self._cluster.add_file(run.project, cid, row.id)
                present.add(row.filename)
            names.append(row.filename)
        for part in attached:
            if part["filename"] in present:
                continue
            if part.get("file_id"):
                await self._cluster.add_file(run.project, cid, part["file_id"])
            else:
                data = base64.b64decode(part["file_data"].split(",", 1)[-1])
                await self._cluster.add_upload(run.project, cid, part["filename"], data)
            present.add(part["filename"])
        await self._attach_images(run, cid, images, items, present)
        if names:
            note = "Files available in /mnt/data: " + ", ".join(f"/mnt/data/{n}" for n in names)
            if run.messages and run.messages[0]["role"] == "system":
                run.messages[0]["content"] += "\n\n" + note
            else:
                run.messages.insert(0, {"role": "system", "content": note})

    async def _attach_images(self, run: Run, cid: str, images: dict[str, str], items: list[dict[str, Any]],
                             present: set[str]) -> None:
        for item in items:
            for part in item.get("content") or [] if item.get("type") == "message" else []:
                key = image_key(part) if isinstance(part, dict) and part.get("type") == "input_image" else None
                name = images.get(key or "")
                if name is None or name in present:
                    continue
                if key is not None and key.startswith("sha256:"):
                    try:
                        data = base64.b64decode(part["image_url"].split(",", 1)[-1], validate=True)
                    except (binascii.Error, ValueError):
                        raise InvalidInput("an input_image data URL is not valid base64", "input") from None
                    await self._cluster.add_upload(run.project, cid, name, data)
                else:
                    await self._cluster.add_file(run.project, cid, part["file_id"])
                present.add(name)

    async def _abandon(self, run: Run) -> None:
        """An auto container made for a response that ran no code goes again: nothing refers to it."""
        if run.made_container and run.container_id is not None:
            with contextlib.suppress(CellboxError):
                await self._cluster.delete(run.project, run.container_id)
            run.made_container = False

    # --- running -----------------------------------------------------------------------------------------------

    async def create(self, project: str, body: CreateResponse) -> dict[str, Any]:
        """A whole response at once. A failure before anything was produced is an HTTP error, not a response."""
        run = await self.start(project, body)
        run.whole = True
        final: dict[str, Any] = {}
        async for event in self.events(run, raise_early=True):
            if "response" in event:
                final = event["response"]
        return shown_response(final, body.include)

    async def begin(self, run: Run) -> None:
        """Store the response as it starts (once), so it can be retrieved while it runs. A whole one is stored
        once, as it ends: its id is unknown to anyone until then."""
        if run.body.store and not run.stored and not run.whole:
            await self._history.begin(run.project, run.response.model_dump(), run.inputs)
            run.stored = True

    async def settled(self) -> None:
        """Until the records of runs that stopped early are written."""
        if self._closing:
            await asyncio.gather(*self._closing, return_exceptions=True)

    async def events(self, run: Run, raise_early: bool = False) -> AsyncIterator[dict[str, Any]]:
        """The run's wire events, whole (code outputs included): a stream shows each with ``shown_event``."""
        await self.begin(run)
        try:
            yield run.event("response.created", response=run.snapshot())
            if run.response.status == "queued":  # a background run, now picked up
                run.response.status = "in_progress"
            yield run.event("response.in_progress", response=run.snapshot())
            async for event in self._loop(run):
                yield event
        except Exception as exc:
            if not run.response.output:
                await self._abandon(run)
            if raise_early and not run.response.output:
                if run.stored:
                    await self._history.discard(run.response.id)
                run.finished = True
                raise
            if not isinstance(exc, CellboxError):
                log.exception("response %s failed", run.response.id, exc_info=exc)
            async for event in self._fail(run, exc):
                yield event
        finally:
            if not run.finished:  # the client went away mid-stream: the run stops, its record says how far it got
                if run.response.status == "in_progress":
                    run.response.status = "incomplete"
                for item in run.response.output:
                    if item.status in ("in_progress", "interpreting"):
                        item.status = "incomplete"
                task = asyncio.create_task(self._finish(run))
                self._closing.add(task)
                task.add_done_callback(self._closing.discard)

    async def _finish(self, run: Run) -> None:
        if run.stored:
            await self._history.finish(run.project, run.response.model_dump(), run.tool_results)
        elif run.body.store:
            await self._history.record(run.project, run.response.model_dump(), run.inputs, run.tool_results)
        if run.conversation_id is not None:
            outputs = [item.model_dump() for item in run.response.output]
            with contextlib.suppress(NotFound):  # the conversation was deleted meanwhile: nothing to add to
                await self._conversations.add(run.project, run.conversation_id, run.inputs + outputs)
        run.finished = True

    def _offered(self, run: Run) -> list[str]:
        """The tools the model may call, by the names it sees (``python`` for code_interpreter)."""
        names = (["python"] if run.interpreter else []) + list(run.functions)
        choice = run.body.tool_choice
        if isinstance(choice, AllowedToolsChoice):
            allowed = {"python" if t.type == "code_interpreter" else t.name for t in choice.tools}
            names = [name for name in names if name in allowed]
        return names

    def _choice(self, run: Run, turn: int, offered: list[str]) -> Any:
        """tool_choice for the model server. A forced tool holds for the first turn only (after it the model must
        be free to answer), and is sent as ``required`` when it is the only tool offered: llama.cpp reads only
        the string form and silently serves ``auto`` for an object."""
        if run.calls_made >= self._budget(run):
            return "none"
        choice = run.body.tool_choice
        if choice in ("auto", "none"):
            return choice
        forced: str | None = None
        if isinstance(choice, HostedToolChoice):
            forced = "python"
        elif isinstance(choice, FunctionChoice):
            forced = choice.name
        if turn > 0:
            return "auto"
        if forced is None:  # "required", or allowed_tools with its mode
            return choice.mode if isinstance(choice, AllowedToolsChoice) else "required"
        return "required" if offered == [forced] else {"type": "function", "function": {"name": forced}}

    def _refusal(self, run: Run) -> str | None:
        """Why a well-formed call must not run, if it must not: the caller forbade the tool or the budget is spent."""
        if run.body.tool_choice == "none":
            return "not run: the tool is off for this response (tool_choice 'none'); answer without it"
        if run.calls_made >= self._budget(run):
            return f"not run: this response reached its limit of {self._budget(run)} code runs; answer now"
        return None

    def _budget(self, run: Run) -> int:
        return min(run.body.max_tool_calls or self._max_tool_calls, self._max_tool_calls)

    def _request(self, run: Run, turn: int) -> dict[str, Any]:
        body = run.body
        request: dict[str, Any] = {"model": body.model, "messages": run.messages}
        offered = self._offered(run)
        if offered and not run.refused:  # after a refused call the model gets no tool: it must answer
            request["tools"] = [python_tool(self._timeout) if name == "python" else function_tool(
                run.functions[name].model_dump()) for name in offered]
            request["tool_choice"] = self._choice(run, turn, offered)
            if not body.parallel_tool_calls:
                request["parallel_tool_calls"] = False
        if body.reasoning is not None and body.reasoning.effort is not None:
            request["reasoning_effort"] = body.reasoning.effort
        if body.temperature is not None:
            request["temperature"] = body.temperature
        if body.top_p is not None:
            request["top_p"] = body.top_p
        if body.max_output_tokens is not None:
            request["max_tokens"] = body.max_output_tokens
        fmt = body.text.format if body.text else None
        if fmt is not None and fmt.type == "json_schema":
            request["response_format"] = {"type": "json_schema", "json_schema": fmt.model_dump(
                by_alias=True, exclude_none=True, include={"name", "json_schema", "strict", "description"})}
        elif fmt is not None and fmt.type == "json_object":
            request["response_format"] = {"type": "json_object"}
        return request

    async def _loop(self, run: Run) -> AsyncIterator[dict[str, Any]]:
        usage = Usage()
        for turn_number in range(self._budget(run) + 3):
            turn = Turn()
            run.calls = []
            async for event in self._upstream.turn(self._request(run, turn_number), run.body.stream):
                if isinstance(event, ReasoningDelta):
                    for out in self._think(run, event.text):
                        yield out
                    continue
                for out in self._close_reasoning(run):
                    yield out
                if isinstance(event, TextDelta):
                    for out in self._text(run, event.text):
                        yield out
                elif isinstance(event, CallStarted):
                    for out in self._close_message(run, final=False):
                        yield out
                    if run.is_function(event.name):
                        yield self._open_function_call(run, event.name)
                    else:
                        async for out in self._open_call(run):
                            yield out
                elif isinstance(event, ArgumentsDelta):
                    if event.index < len(run.calls):
                        state = run.calls[event.index]
                        if isinstance(state, _FunctionCall):
                            state.item.arguments += event.text
                            yield run.event("response.function_call_arguments.delta", output_index=state.index,
                                            item_id=state.item.id, delta=event.text)
                        elif piece := state.code.feed(event.text):
                            state.item.code = (state.item.code or "") + piece
                            yield run.event("response.code_interpreter_call_code.delta", output_index=state.index,
                                            item_id=state.item.id, delta=piece)
                else:
                    turn = event
            usage = usage + turn.usage
            run.response.usage = usage
            if turn.finish_reason in INCOMPLETE:
                run.response.status = "incomplete"
                run.response.incomplete_details = IncompleteDetails(reason=INCOMPLETE[turn.finish_reason])  # type: ignore[arg-type]
            if not turn.calls:
                for out in self._close_message(run, final=True, finish_reason=turn.finish_reason):
                    yield out
                break
            for out in self._close_message(run, final=False):
                yield out
            if turn.text.strip() or turn.reasoning:
                # Reasoning models continue their chain of thought across tool turns only if it comes back.
                said = {"role": "assistant", "content": turn.text.strip() or None}
                run.messages.append({**said, "reasoning": turn.reasoning} if turn.reasoning else said)
            handed_over = False
            for state, call in zip(run.calls, turn.calls, strict=False):
                state.call = call
                if isinstance(state, _FunctionCall):
                    for out in self._hand_over(run, state):
                        yield out
                    handed_over = handed_over or state.item.status == "completed"
                else:
                    async for out in self._execute(run, state):
                        yield out
            run.calls = []
            if handed_over:  # the client runs its functions and continues with their outputs
                break
        else:
            log.warning("response %s: the model kept calling the tool after its budget", run.response.id)
        run.response.status = run.response.status if run.response.status == "incomplete" else "completed"
        run.response.completed_at = now()
        await self._finish(run)
        kind = "response.incomplete" if run.response.status == "incomplete" else "response.completed"
        yield run.event(kind, response=run.snapshot())

    @staticmethod
    def _open_with_part(run: Run, item: OutputMessage | Reasoning,
                        part: OutputText | ReasoningText) -> tuple[int, list[dict[str, Any]]]:
        """Add an output item that streams one content part (a message's text, a reasoning's): where it is, and
        its two opening events."""
        index = len(run.response.output)
        run.response.output.append(item)
        events = [run.event("response.output_item.added", output_index=index, item=run.item(item))]
        item.content.append(part)  # type: ignore[arg-type]
        events.append(run.event("response.content_part.added", item_id=item.id, output_index=index, content_index=0,
                                part=part.model_dump()))
        return index, events

    def _think(self, run: Run, text: str) -> list[dict[str, Any]]:
        """Reasoning as it streams: one ``reasoning`` item per stretch of thought, before what it led to."""
        events: list[dict[str, Any]] = []
        if run.thought is None:
            events += self._close_message(run, final=False)
            item = Reasoning(id=reasoning_id(), content=[], status="in_progress")
            index, opened = self._open_with_part(run, item, ReasoningText(text=""))
            run.thought = _Reasoning(item, index)
            events += opened
        thought = run.thought.item
        thought.content[0].text += text
        events.append(run.event("response.reasoning_text.delta", item_id=thought.id, output_index=run.thought.index,
                                content_index=0, delta=text))
        return events

    def _close_reasoning(self, run: Run) -> list[dict[str, Any]]:
        thought, run.thought = run.thought, None
        if thought is None:
            return []
        item, where = thought.item, {"item_id": thought.item.id, "output_index": thought.index, "content_index": 0}
        item.status = "completed"
        return [run.event("response.reasoning_text.done", **where, text=item.content[0].text),
                run.event("response.content_part.done", **where, part=item.content[0].model_dump()),
                run.event("response.output_item.done", output_index=thought.index, item=run.item(item))]

    def _text(self, run: Run, text: str) -> list[dict[str, Any]]:
        events = []
        if run.message is None:
            if not text.strip():
                return []  # whitespace before a tool call is not a message
            text = text.lstrip()
            item = OutputMessage(id=message_id(), status="in_progress", content=[])
            index, opened = self._open_with_part(run, item, OutputText(text=""))
            run.message = _Message(item, index)
            events += opened
        run.message.text += text
        run.message.item.content[0].text = run.message.text
        events.append(run.event("response.output_text.delta", item_id=run.message.item.id,
                                output_index=run.message.index, content_index=0, delta=text, logprobs=[]))
        return events

    def _close_message(self, run: Run, final: bool, finish_reason: str | None = None,
                       status: str = "completed") -> list[dict[str, Any]]:
        message, run.message = run.message, None
        if message is None:
            return []
        item, where = message.item, {"item_id": message.item.id, "output_index": message.index, "content_index": 0}
        part = item.content[0]
        if final and run.container_id is not None:
            files = [(f.id, f.path) for f in run.generated.values()]
            part.annotations = [ContainerFileCitation(container_id=run.container_id, file_id=c.file_id,
                                                      filename=c.filename, start_index=c.start, end_index=c.end)
                                for c in cite(part.text, files)]
        if finish_reason in INCOMPLETE:
            status = "incomplete"
        item.status = status  # type: ignore[assignment]
        events = [run.event("response.output_text.done", **where, text=part.text, logprobs=[])]
        events += [run.event("response.output_text.annotation.added", **where, annotation_index=n,
                             annotation=a.model_dump()) for n, a in enumerate(part.annotations)]
        events.append(run.event("response.content_part.done", **where, part=part.model_dump()))
        events.append(run.event("response.output_item.done", output_index=message.index, item=run.item(item)))
        return events

    async def _open_call(self, run: Run) -> AsyncIterator[dict[str, Any]]:
        container = await self._container(run)
        item = CodeInterpreterCall(id=call_id(), status="in_progress", container_id=container, code="", outputs=None)
        state = _Call(item, len(run.response.output))
        run.calls.append(state)
        run.response.output.append(item)
        yield run.event("response.output_item.added", output_index=state.index, item=run.item(item))
        yield run.event("response.code_interpreter_call.in_progress", output_index=state.index, item_id=item.id)

    def _open_function_call(self, run: Run, name: str) -> dict[str, Any]:
        item = FunctionCall(id=function_item_id(), call_id=function_call_id(), name=name, arguments="",
                            status="in_progress")
        state = _FunctionCall(item, len(run.response.output))
        run.calls.append(state)
        run.response.output.append(item)
        return run.event("response.output_item.added", output_index=state.index, item=run.item(item))

    def _hand_over(self, run: Run, state: _FunctionCall) -> list[dict[str, Any]]:
        """A function call is complete: it goes to the client, unless it must not (the tool is off, or the budget
        is spent), in which case the model is told so and the loop goes on."""
        item, where = state.item, {"output_index": state.index, "item_id": state.item.id}
        assert state.call is not None
        item.arguments = state.call.arguments or "{}"
        events = [run.event("response.function_call_arguments.done", **where, name=item.name,
                            arguments=item.arguments)]
        problem = self._refusal(run)
        run.calls_made += 1
        if problem is None:
            item.status = "completed"
        else:
            run.refused, item.status = True, "incomplete"
            wire = tool_call_id(item.call_id)
            run.messages.append({"role": "assistant", "content": None, "tool_calls": [{
                "id": wire, "type": "function", "function": {"name": item.name, "arguments": item.arguments}}]})
            run.messages.append({"role": "tool", "tool_call_id": wire, "content": f"error: {problem}"})
        events.append(run.event("response.output_item.done", output_index=state.index, item=run.item(item)))
        return events

    async def _execute(self, run: Run, state: _Call) -> AsyncIterator[dict[str, Any]]:
        item, where = state.item, {"output_index": state.index, "item_id": state.item.id}
        assert state.call is not None
        code, problem = code_from_arguments(state.call.arguments)
        if problem is None and (problem := self._refusal(run)) is not None:
            run.refused = True
        if code is None or problem is not None:
            item.code, item.status = code if code is not None else state.call.arguments, "failed"
            item.outputs = [LogsOutput(logs=f"Error: {problem}\n")]
            yield run.event("response.code_interpreter_call_code.done", **where, code=item.code)
            yield run.event("response.output_item.done", output_index=state.index, item=run.item(item))
            result = tool_result(None, f"error: {problem}")
        else:
            item.code = code
            yield run.event("response.code_interpreter_call_code.done", **where, code=code)
            item.status = "interpreting"
            yield run.event("response.code_interpreter_call.interpreting", **where)
            run.calls_made += 1
            try:
                execution = await self._cluster.run(run.project, item.container_id, code, figures=True)
            except CellboxError as exc:
                item.status, item.outputs = "failed", [LogsOutput(logs=f"Error: {exc}\n")]
                yield run.event("response.output_item.done", output_index=state.index, item=run.item(item))
                raise
            item.outputs = list(execution.outputs)
            item.status = CALL_STATUS.get(execution.status, "failed")  # type: ignore[assignment]
            written = list(execution.files)  # figures included
            for file in written:
                run.generated[file.path] = file
            note = execution.message or (None if execution.status in ("completed", "failed") else execution.status)
            if run.lost_container is not None:
                lost = (f"the earlier container {run.lost_container} expired, so this code ran in a new one: "
                        "variables, imports and files from before are gone (the request's files were copied in "
                        "again)")
                note, run.lost_container = "; ".join(filter(None, [lost, note])), None
            result = tool_result([o.model_dump() for o in item.outputs], note, [f.path for f in written])
            yield run.event("response.code_interpreter_call.completed", **where)
            yield run.event("response.output_item.done", output_index=state.index, item=run.item(item))
        run.tool_results[item.id] = result
        shown = displayed([o.model_dump() for o in item.outputs or []]) if run.show_images else []
        call_messages(run.messages, item.id, item.code, result, shown)

    async def _fail(self, run: Run, exc: Exception) -> AsyncIterator[dict[str, Any]]:
        for event in self._close_reasoning(run):
            yield event
        for event in self._close_message(run, final=False, status="incomplete"):
            yield event
        for state in run.calls:
            if isinstance(state, _FunctionCall) and state.item.status == "in_progress":
                state.item.status = "incomplete"
                yield run.event("response.output_item.done", output_index=state.index, item=run.item(state.item))
            elif isinstance(state, _Call) and state.item.status in ("in_progress", "interpreting"):
                state.item.status = "failed"
                yield run.event("response.output_item.done", output_index=state.index, item=run.item(state.item))
        run.calls = []
        message = str(exc) if isinstance(exc, CellboxError) else "The server had an error processing the response."
        code = "invalid_prompt" if isinstance(exc, UpstreamRejected) else "server_error"
        run.response.status, run.response.error = "failed", ResponseError(code=code, message=message)
        await self._finish(run)
        yield run.event("response.failed", response=run.snapshot())

    async def aclose(self) -> None:
        await self.settled()


def _check_calls_answered(items: list[dict[str, Any]]) -> None:
    """Every function call needs its output, and every output a call, before the model can go on (as OpenAI)."""
    calls = {item["call_id"] for item in items if item.get("type") == "function_call"
             and item.get("status") != "incomplete"}  # refused or cut off: never handed to the client
    answered = {item["call_id"] for item in items if item.get("type") == "function_call_output"}
    if stray := sorted(answered - calls):
        raise InvalidInput(f"No tool call found for function call output with call_id {stray[0]}.", "input")
    if missing := sorted(calls - answered):
        raise InvalidInput(f"No tool output found for function call {missing[0]}.", "input")


def _has_image(items: list[dict[str, Any]]) -> bool:
    return any(part.get("type") == "input_image" for item in items if item.get("type") == "message"
               for part in item.get("content") or [] if isinstance(part, dict))
