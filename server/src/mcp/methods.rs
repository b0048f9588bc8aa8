//! The MCP methods a Palisade server answers, for one authenticated caller under one snapshot.
//!
//! Every method that exposes a tool or a document asks the evaluator through the caller's
//! [`Access`]: `tools/list` shows exactly the tools `tools/call` would allow, `resources/list`
//! exactly the documents `resources/read` would allow. A call the policy denies is answered with
//! HTTP 403 and `insufficient_scope` (MCP authorization, "Scope challenge handling"), naming the
//! missing scopes; an unknown tool with JSON-RPC `-32602`.
//!
//! What this does not do: authenticate, parse JSON-RPC, or touch HTTP (see `http.rs`).

use std::borrow::Cow;

use palisade_crds::evaluator::{Decision, Effect, Explanation, Grant, Reason};
use palisade_crds::mcp_server::ToolAction;
use palisade_crds::{Access, document::ToolDefinition};
use serde_json::{Map, Value, json};

use super::jsonrpc::code;
use super::protocol::{self, META_SERVER_INFO, Revision};
use crate::documents::{self, DocumentError};
use crate::state::Snapshot;
use crate::upstream::UpstreamError;

/// How long clients may cache list results (modern `ttlMs`).
const LIST_TTL_MS: u64 = 60_000;

/// The answer to one request.
#[derive(Debug, Clone, PartialEq)]
pub enum Reply<'p> {
    /// A JSON-RPC result.
    Result(Value),
    /// A JSON-RPC result already serialized for the caller's revision (see [`Prerendered`]).
    Serialized(Cow<'p, str>),
    /// A JSON-RPC error with its HTTP status.
    Error {
        /// HTTP status.
        status: u16,
        /// JSON-RPC code.
        code: i64,
        /// Message.
        message: String,
        /// Data.
        data: Option<Value>,
    },
    /// The policy denies the call: 403 with `insufficient_scope`.
    InsufficientScope {
        /// Scopes that would allow it.
        missing: Vec<String>,
        /// Message.
        message: String,
    },
    /// The upstream of a proxying server gave no result (see [`UpstreamError::http_status`]).
    Upstream(UpstreamError),
}

pub(super) fn error(status: u16, code: i64, message: impl Into<String>, data: Option<Value>) -> Reply<'static> {
    Reply::Error {
        status,
        code,
        message: message.into(),
        data,
    }
}

/// What an authorization decision was about, for audit and metrics.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AuthzKind {
    /// A tool call.
    Tool,
    /// A resource read.
    Resource,
    /// A prompt got from an upstream (proxy mode).
    Prompt,
    /// A list (tools, resources or prompts).
    List,
}

/// The authorization decision behind a reply.
#[derive(Debug, Clone)]
pub struct AuthzRecord<'p> {
    /// What was decided on.
    pub kind: AuthzKind,
    /// The decision (for lists: allow).
    pub effect: Effect,
    /// Stable reason code.
    pub reason: &'static str,
    /// The tool or resource URI.
    pub target: Option<String>,
    /// The rule that decided.
    pub rule: Option<&'p str>,
    /// Roles (or `token`) that granted the required scopes.
    pub granted_by: Vec<&'p str>,
    /// Scopes the caller lacks.
    pub missing: Vec<&'p str>,
    /// The request tried to name something outside a collection (`..`, separators, NUL).
    pub path_traversal: bool,
    /// For `argument_denied`: the argument that failed and the constraint (never its value).
    pub argument: Option<(&'p str, &'static str)>,
    /// How the request forwarded to the upstream went (proxy mode).
    pub upstream: Option<Forwarded>,
    /// When the decision was made (the `authorize` span ends there).
    pub decided: std::time::Instant,
}

/// A request forwarded to the upstream, for the audit event.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Forwarded {
    /// `ok`, `error` (the upstream's own JSON-RPC error), `unavailable`, `timeout` or `invalid`.
    pub outcome: &'static str,
    /// How long the upstream took.
    pub duration: std::time::Duration,
}

/// Whether a document name or resource URI tries to leave its collection.
pub fn looks_like_traversal(text: &str) -> bool {
    let lower = text.to_ascii_lowercase();
    let path = lower.strip_prefix("palisade://").unwrap_or(&lower);
    let name = path.split_once('/').map_or(path, |(_, name)| name);
    ["..", "/", "\\", "%2f", "%5c", "%2e", "%00", "\0"]
        .iter()
        .any(|p| name.contains(p))
}

/// One request to answer.
pub struct Call<'a, 'p> {
    /// The snapshot in force.
    pub snapshot: &'p Snapshot,
    /// What the caller holds.
    pub access: &'a Access<'p>,
    /// The revision it speaks.
    pub revision: Revision,
    /// The request's trace, while trace export is on (an upstream call is a span of it).
    pub trace: Option<&'a crate::trace::RequestTrace>,
}

/// What a server offers at the handshake.
pub(super) struct Offer {
    /// `capabilities` of `initialize` and `server/discover`.
    pub capabilities: Value,
    /// `instructions`.
    pub instructions: String,
}

impl Offer {
    /// A document server: tools and the collections' documents as resources.
    fn documents(call: &Call<'_, '_>) -> Self {
        Self {
            capabilities: json!({"tools": {"listChanged": false}, "resources": {"listChanged": false, "subscribe": false}}),
            instructions: instructions(call),
        }
    }
}

/// Answers `method` with `params`.
pub fn handle<'p>(
    call: &Call<'_, 'p>,
    method: &str,
    params: &Map<String, Value>,
) -> (Reply<'p>, Option<AuthzRecord<'p>>) {
    let (reply, authz) = match method {
        "tools/list" => list_tools(call),
        "tools/call" => call_tool(call, params),
        "resources/list" => list_resources(call),
        "resources/templates/list" => (Reply::Result(json!({"resourceTemplates": []})), None),
        "resources/read" => read_resource(call, params),
        _ => (session(call, method, params, &Offer::documents(call)), None),
    };
    (decorate(call, method, reply), authz)
}

/// The methods that expose nothing the policy governs: the handshake and `ping`, else
/// method not found.
pub(super) fn session(call: &Call<'_, '_>, method: &str, params: &Map<String, Value>, offer: &Offer) -> Reply<'static> {
    let modern = call.revision.is_modern();
    match method {
        "initialize" if !modern => Reply::Result(initialize(params, offer)),
        "ping" if !modern => Reply::Result(json!({})),
        "server/discover" => Reply::Result(discover(offer)),
        _ => error(
            if modern { 404 } else { 200 },
            code::METHOD_NOT_FOUND,
            format!("Method not found: {method}"),
            None,
        ),
    }
}

fn server_info() -> Value {
    json!({"name": "palisade-server", "title": "Palisade MCP server", "version": env!("CARGO_PKG_VERSION")})
}

fn instructions(call: &Call<'_, '_>) -> String {
    let collections: Vec<String> = call
        .snapshot
        .policy
        .document()
        .collections
        .iter()
        .map(|c| match &c.description {
            Some(d) => format!("{} ({d})", c.name),
            None => c.name.clone(),
        })
        .collect();
    format!(
        "Document collections: {}. The tools and resources listed are the ones your credentials may use.",
        collections.join(", ")
    )
}

fn initialize(params: &Map<String, Value>, offer: &Offer) -> Value {
    let requested = params.get("protocolVersion").and_then(Value::as_str);
    json!({
        "protocolVersion": protocol::negotiate(requested),
        "capabilities": offer.capabilities,
        "serverInfo": server_info(),
        "instructions": offer.instructions,
    })
}

fn discover(offer: &Offer) -> Value {
    json!({
        "supportedVersions": protocol::SUPPORTED,
        "capabilities": offer.capabilities,
        "serverInfo": server_info(),
        "instructions": offer.instructions,
    })
}

/// Adds what the modern revision requires of every result: `resultType`, the server info in
/// `_meta`, and cache hints on cacheable results (`private` wherever the answer depends on the
/// caller).
pub(super) fn decorate<'p>(call: &Call<'_, '_>, method: &str, reply: Reply<'p>) -> Reply<'p> {
    match reply {
        Reply::Result(result) => Reply::Result(decorate_result(call.revision, method, result)),
        other => other,
    }
}

/// [`decorate`] of one result.
fn decorate_result(revision: Revision, method: &str, result: Value) -> Value {
    let Value::Object(mut result) = result else {
        return result;
    };
    if !revision.is_modern() {
        return Value::Object(result);
    }
    result.insert("resultType".into(), json!("complete"));
    let meta = result.entry("_meta").or_insert_with(|| json!({}));
    meta[META_SERVER_INFO] = server_info();
    let scope = match method {
        "server/discover" | "resources/templates/list" => Some("public"),
        "tools/list" | "resources/list" | "resources/read" | "prompts/list" => Some("private"),
        _ => None,
    };
    // A handler that states its own scope (a proxy's per-caller lists) keeps it.
    if let Some(scope) = scope {
        result.entry("ttlMs").or_insert(json!(LIST_TTL_MS));
        result.entry("cacheScope").or_insert(json!(scope));
    }
    Value::Object(result)
}

fn input_schema(action: ToolAction) -> Value {
    match action {
        ToolAction::List | ToolAction::ReadAll => {
            json!({"type": "object", "properties": {}, "additionalProperties": false})
        }
        ToolAction::Get => json!({
            "type": "object",
            "properties": {"name": {"type": "string", "description": "Name of the document, e.g. public.md"}},
            "required": ["name"],
            "additionalProperties": false,
        }),
        ToolAction::Search => json!({
            "type": "object",
            "properties": {"query": {"type": "string", "description": "Text to find (case-insensitive)", "maxLength": 256}},
            "required": ["query"],
            "additionalProperties": false,
        }),
    }
}

fn default_description(tool: &ToolDefinition) -> String {
    match tool.action {
        ToolAction::List => format!("List the documents of the {} collection.", tool.collection),
        ToolAction::Get => format!("Get one document of the {} collection by name.", tool.collection),
        ToolAction::Search => format!("Search the documents of the {} collection.", tool.collection),
        ToolAction::ReadAll => format!("Read every document of the {} collection.", tool.collection),
    }
}

fn tool_json(tool: &ToolDefinition) -> Value {
    let mut value = json!({
        "name": tool.name,
        "description": tool.description.clone().unwrap_or_else(|| default_description(tool)),
        "inputSchema": input_schema(tool.action),
        "annotations": {"readOnlyHint": true, "destructiveHint": false, "idempotentHint": true, "openWorldHint": false},
    });
    if let Some(title) = &tool.title {
        value["title"] = json!(title);
    }
    value
}

fn list_tools<'p>(call: &Call<'_, 'p>) -> (Reply<'p>, Option<AuthzRecord<'p>>) {
    let tools = call.snapshot.policy.tools();
    let prerendered = &call.snapshot.prerendered;
    // A tool whose argument rules narrow what this caller may send is listed with its input
    // schema narrowed; the others as prerendered.
    let visible: Vec<Cow<'_, str>> = call
        .access
        .visible_tools()
        .map(|tool| {
            let index = index_in(tools, tool).expect("the evaluator yields the policy's own tools");
            match call.access.input_schema_narrowing(&tool.name) {
                None => Cow::Borrowed(prerendered.tools[index].as_str()),
                Some(narrowing) => Cow::Owned(with_narrowed_schema(
                    tool_json(tool),
                    narrowing.apply(&input_schema(tool.action)),
                )),
            }
        })
        .collect();
    let (text, count) = prerendered
        .tools_list
        .render(visible.iter().map(|e| e.as_ref()), call.revision);
    (
        Reply::Serialized(Cow::Owned(text)),
        Some(list_record(format!("tools:{count}"))),
    )
}

/// A `tools/list` entry with its input schema narrowed to a caller's argument rules and the
/// mark saying so in its `_meta` (`palisade.dev/argumentRules`), serialized.
pub(super) fn with_narrowed_schema(mut entry: Value, (schema, mark): (Value, Value)) -> String {
    entry["inputSchema"] = schema;
    if !entry.get("_meta").is_some_and(Value::is_object) {
        entry["_meta"] = json!({});
    }
    entry["_meta"][palisade_crds::arguments::NARROWED_META_KEY] = mark;
    serde_json::to_string(&entry).expect("JSON values serialize")
}

/// The position of `item` in `slice`, when it is one of its elements (by address, O(1)).
fn index_in<T>(slice: &[T], item: &T) -> Option<usize> {
    let offset = (item as *const T as usize).checked_sub(slice.as_ptr() as usize)?;
    let index = offset / std::mem::size_of::<T>().max(1);
    slice
        .get(index)
        .filter(|candidate| std::ptr::eq(*candidate, item))
        .map(|_| index)
}

/// The answers that depend on nothing but the snapshot, serialized once when the snapshot is
/// built instead of on every request: each tool's `tools/list` entry, the `tools/list` result
/// around them, and the results of the tools that take no arguments (`list`, `readAll`). Each
/// comes from the same functions as the answers built per request, for both revision families
/// (`[legacy, modern]`), so a serialized answer is byte for byte what the request would build.
#[derive(Debug, Default)]
pub struct Prerendered {
    /// `tools/list` entry of each tool, in the policy's tool order.
    tools: Vec<String>,
    /// The `tools/list` result around its tools.
    tools_list: ListFrame,
    /// `tools/call` result of each argument-free tool, per revision family.
    calls: Vec<Option<[String; 2]>>,
}

impl Prerendered {
    /// Serializes the snapshot's constant answers.
    pub fn new(policy: &palisade_crds::Policy, documents: &documents::DocumentStore) -> Self {
        let tools = policy.tools();
        let families = [Revision::Legacy20250618, Revision::Modern];
        let calls = tools
            .iter()
            .map(|tool| {
                let result = execute_without_arguments(documents, tool)?;
                Some(families.map(|revision| {
                    let decorated = decorate_result(revision, "tools/call", result.clone());
                    serde_json::to_string(&decorated).expect("JSON values serialize")
                }))
            })
            .collect();
        Self {
            tools: tools
                .iter()
                .map(|tool| serde_json::to_string(&tool_json(tool)).expect("JSON values serialize"))
                .collect(),
            tools_list: ListFrame::new(),
            calls,
        }
    }
}

impl Prerendered {
    /// The `tools/list` result listing the tools at `indices` (positions in the policy's tools),
    /// and how many it lists.
    pub fn tools_list(&self, indices: impl Iterator<Item = usize>, revision: Revision) -> (String, usize) {
        let entries = indices.map(|index| self.tools[index].as_str());
        self.tools_list.render(entries, revision)
    }
}

/// The `tools/list` result before and after its tools, serialized once per revision family
/// (`[legacy, modern]`): a list is then its entries, already serialized, joined inside.
#[derive(Debug, Default)]
pub(super) struct ListFrame([(String, String); 2]);

impl ListFrame {
    pub(super) fn new() -> Self {
        Self([Revision::Legacy20250618, Revision::Modern].map(|revision| {
            let empty = decorate_result(revision, "tools/list", json!({"tools": []}));
            let text = serde_json::to_string(&empty).expect("JSON values serialize");
            let (before, after) = text
                .split_once(EMPTY_TOOLS)
                .expect("the tools/list result has one empty tools array");
            (format!("{before}\"tools\":["), format!("]{after}"))
        }))
    }

    /// The result listing `entries` (each a serialized tool), and how many it lists.
    pub(super) fn render<'a>(&self, entries: impl Iterator<Item = &'a str>, revision: Revision) -> (String, usize) {
        let (before, after) = &self.0[usize::from(revision.is_modern())];
        let mut text = String::with_capacity(before.len() + after.len() + 512);
        text.push_str(before);
        let mut count = 0;
        for entry in entries {
            if count > 0 {
                text.push(',');
            }
            text.push_str(entry);
            count += 1;
        }
        text.push_str(after);
        (text, count)
    }
}

const EMPTY_TOOLS: &str = "\"tools\":[]";

pub(super) fn list_record<'p>(target: String) -> AuthzRecord<'p> {
    AuthzRecord {
        kind: AuthzKind::List,
        effect: Effect::Allow,
        reason: "filtered",
        target: Some(target),
        rule: None,
        granted_by: Vec::new(),
        missing: Vec::new(),
        path_traversal: false,
        argument: None,
        upstream: None,
        decided: std::time::Instant::now(),
    }
}

fn record<'p>(call: &Call<'_, 'p>, kind: AuthzKind, target: &str, decision: &Decision<'p>) -> AuthzRecord<'p> {
    let explanation = decision.tool.map(|tool| call.access.explain_tool(&tool.name));
    authz_record(kind, target, decision, explanation.as_ref())
}

/// The record of `decision` on `target`, with what granted and what is missing when it is
/// `explanation`ed (a known tool).
pub(super) fn authz_record<'p>(
    kind: AuthzKind,
    target: &str,
    decision: &Decision<'p>,
    explanation: Option<&Explanation<'p>>,
) -> AuthzRecord<'p> {
    let (granted_by, missing) = match explanation {
        Some(explanation) => {
            let mut granted: Vec<&'p str> = explanation
                .granted
                .iter()
                .map(|(_, grant)| match grant {
                    Grant::Token | Grant::ImpliedByToken(_) => "token",
                    Grant::Role(role) | Grant::ImpliedByRole { role, .. } => role,
                })
                .collect();
            granted.sort_unstable();
            granted.dedup();
            (granted, explanation.missing.clone())
        }
        None => (Vec::new(), Vec::new()),
    };
    AuthzRecord {
        kind,
        effect: decision.effect,
        reason: decision.reason.code(),
        target: Some(target.to_owned()),
        rule: decision.rule.map(|r| r.match_.as_str()),
        granted_by,
        missing,
        path_traversal: false,
        argument: decision.argument.map(|a| (a.argument, a.violation.constraint())),
        upstream: None,
        decided: std::time::Instant::now(),
    }
}

pub(super) fn denial(decision: &Decision<'_>, missing: &[&str], what: &str) -> Reply<'static> {
    if decision.reason == Reason::ArgumentDenied {
        return argument_denial(decision, what);
    }
    let message = match decision.reason {
        Reason::NoMatchingRule => format!(
            "Access to {what} is not granted by any policy.\n\nAction: ask the owner of this server's McpAccessPolicy for access."
        ),
        Reason::AmbiguousRules => format!(
            "Access to {what} is decided by rules of equal specificity that require different scopes or modes, so it is denied.\n\nAction: ask the owner of this server's McpAccessPolicy to add a rule for the exact name."
        ),
        _ => format!(
            "Missing required scope: {}.\n\nAction: obtain a token with the scope {} (or a role that grants it).",
            missing.join(" "),
            missing.join(" ")
        ),
    };
    Reply::InsufficientScope {
        missing: missing.iter().map(|s| (*s).to_owned()).collect(),
        message,
    }
}

/// A call whose arguments the caller's rules refuse: 403 naming the argument and the rule (never
/// the value). When another rule for the tool would allow these arguments with more scopes, the
/// challenge asks for all of that rule's scopes (`insufficient_scope`, step-up); otherwise no scope
/// would help and the error says so.
fn argument_denial(decision: &Decision<'_>, what: &str) -> Reply<'static> {
    let failed = decision
        .argument
        .map_or_else(|| "the arguments".to_owned(), |a| a.to_string());
    let rule = decision.rule.map_or("", |r| r.match_.as_str());
    match decision.step_up {
        Some(step_up) => Reply::InsufficientScope {
            missing: step_up.required_scopes.clone(),
            message: format!(
                "The call of {what} is refused by its arguments: {failed} under the rules you hold; a rule for {rule:?} that requires {} allows them.\n\nAction: obtain a token with the scopes {} (or a role that grants them), or call with arguments your rules allow.",
                step_up.required_scopes.join(" "),
                step_up.required_scopes.join(" ")
            ),
        },
        None => Reply::Error {
            status: 403,
            code: code::UNAUTHORIZED,
            message: format!(
                "The call of {what} is refused by its arguments: {failed} (rule {rule:?}).\n\nAction: call with arguments the policy allows; tools/list shows what they are, or ask the owner of this server's McpAccessPolicy."
            ),
            data: Some(json!({
                "code": "ARGUMENT_DENIED",
                "argument": decision.argument.map(|a| a.argument),
                "constraint": decision.argument.map(|a| a.violation.constraint()),
                "rule": rule,
            })),
        },
    }
}

fn call_tool<'p>(call: &Call<'_, 'p>, params: &Map<String, Value>) -> (Reply<'p>, Option<AuthzRecord<'p>>) {
    let Some(name) = params.get("name").and_then(Value::as_str) else {
        return (
            error(200, code::INVALID_PARAMS, "Invalid params: name must be a string", None),
            None,
        );
    };
    // Arguments that are not an object are decided as none (a constrained argument is then
    // missing: fail closed) and refused below if the call is otherwise allowed.
    let arguments = tool_arguments(params);
    let explanation = call
        .access
        .explain_call(name, arguments.as_ref().ok().copied().flatten());
    let decision = explanation.decision;
    let authz = authz_record(AuthzKind::Tool, name, &decision, Some(&explanation));
    let Some(tool) = decision.tool else {
        return (
            error(200, code::INVALID_PARAMS, format!("Unknown tool: {name}"), None),
            Some(authz),
        );
    };
    if !decision.effect.permits() {
        return (denial(&decision, &authz.missing, &format!("tool {name}")), Some(authz));
    }
    let arguments = match arguments {
        Ok(arguments) => arguments.cloned().unwrap_or_default(),
        Err(invalid) => return (invalid, Some(authz)),
    };
    let (reply, traversal) = run_tool(call, tool, &arguments);
    (
        reply,
        Some(AuthzRecord {
            path_traversal: traversal,
            ..authz
        }),
    )
}

/// The `arguments` of a `tools/call` (none when absent or null), or the error for arguments that
/// are not an object.
pub(super) fn tool_arguments(params: &Map<String, Value>) -> Result<Option<&Map<String, Value>>, Reply<'static>> {
    match params.get("arguments") {
        None | Some(Value::Null) => Ok(None),
        Some(Value::Object(arguments)) => Ok(Some(arguments)),
        Some(_) => Err(error(
            200,
            code::INVALID_PARAMS,
            "Invalid params: arguments must be an object",
            None,
        )),
    }
}

/// A tool execution error: reported in the result so the model can see and correct it.
fn tool_error(message: impl Into<String>) -> Reply<'static> {
    Reply::Result(tool_error_value(message.into()))
}

fn tool_error_value(message: String) -> Value {
    json!({"content": [{"type": "text", "text": message}], "isError": true})
}

fn text_result(text: String, structured: Option<Value>) -> Reply<'static> {
    Reply::Result(text_value(text, structured))
}

fn text_value(text: String, structured: Option<Value>) -> Value {
    let mut result = json!({"content": [{"type": "text", "text": text}], "isError": false});
    if let Some(structured) = structured {
        result["structuredContent"] = structured;
    }
    result
}

fn string_argument<'a>(
    call: &Call<'_, '_>,
    arguments: &'a Map<String, Value>,
    key: &str,
) -> Result<&'a str, Reply<'static>> {
    match arguments.get(key) {
        Some(Value::String(value)) => Ok(value),
        _ => {
            let message = format!("Invalid arguments: {key} must be a string");
            // 2025-06-18 lists invalid arguments among protocol errors; later revisions report
            // input validation errors as tool execution errors.
            Err(if call.revision == Revision::Legacy20250618 {
                error(200, code::INVALID_PARAMS, message, None)
            } else {
                tool_error(message)
            })
        }
    }
}

fn document_error(error: &DocumentError) -> Reply<'static> {
    tool_error(error.to_string())
}

/// Runs an allowed tool; the flag says whether its arguments tried to leave the collection.
fn run_tool<'p>(call: &Call<'_, 'p>, tool: &ToolDefinition, arguments: &Map<String, Value>) -> (Reply<'p>, bool) {
    let name = arguments.get("name").and_then(Value::as_str).unwrap_or_default();
    let traversal = tool.action == ToolAction::Get && looks_like_traversal(name);
    (execute(call, tool, arguments), traversal)
}

fn execute<'p>(call: &Call<'_, 'p>, tool: &ToolDefinition, arguments: &Map<String, Value>) -> Reply<'p> {
    let store = &call.snapshot.documents;
    let collection = tool.collection.as_str();
    match tool.action {
        ToolAction::List | ToolAction::ReadAll => {
            let prerendered = index_in(call.snapshot.policy.tools(), tool)
                .and_then(|index| call.snapshot.prerendered.calls.get(index))
                .and_then(Option::as_ref);
            match prerendered {
                Some(results) => Reply::Serialized(Cow::Borrowed(&results[usize::from(call.revision.is_modern())])),
                None => {
                    Reply::Result(execute_without_arguments(store, tool).expect("list and readAll take no arguments"))
                }
            }
        }
        ToolAction::Get => {
            let name = match string_argument(call, arguments, "name") {
                Ok(name) => name,
                Err(reply) => return reply,
            };
            match store.get(collection, name) {
                Ok(document) => text_result(document.content.clone(), None),
                Err(e) => document_error(&e),
            }
        }
        ToolAction::Search => {
            let query = match string_argument(call, arguments, "query") {
                Ok(query) => query,
                Err(reply) => return reply,
            };
            match store.search(collection, query) {
                Ok(hits) => {
                    let text = if hits.is_empty() {
                        format!("No document of {collection} contains {query:?}.")
                    } else {
                        hits.iter()
                            .map(|h| format!("{}:{}: {}", h.document.name, h.line, h.snippet))
                            .collect::<Vec<_>>()
                            .join("\n")
                    };
                    let items: Vec<Value> = hits
                        .iter()
                        .map(|h| json!({"name": h.document.name, "line": h.line, "snippet": h.snippet, "uri": documents::resource_uri(collection, &h.document.name)}))
                        .collect();
                    text_result(text, Some(json!({"hits": items})))
                }
                Err(e) => document_error(&e),
            }
        }
    }
}

/// The result of a tool that takes no arguments (`list`, `readAll`): a function of the documents
/// only, which [`Prerendered`] serializes once per snapshot. `None` for tools with arguments.
fn execute_without_arguments(store: &documents::DocumentStore, tool: &ToolDefinition) -> Option<Value> {
    let collection = tool.collection.as_str();
    Some(match tool.action {
        ToolAction::List => match store.list(collection) {
            Ok(documents) => {
                let lines: Vec<String> = documents
                    .iter()
                    .map(|d| match &d.title {
                        Some(title) => format!("- {} ({title})", d.name),
                        None => format!("- {}", d.name),
                    })
                    .collect();
                let items: Vec<Value> = documents
                    .iter()
                    .map(|d| json!({"name": d.name, "title": d.title, "uri": documents::resource_uri(collection, &d.name), "mimeType": d.mime_type}))
                    .collect();
                text_value(lines.join("\n"), Some(json!({"documents": items})))
            }
            Err(e) => tool_error_value(e.to_string()),
        },
        ToolAction::ReadAll => match store.read_all(collection) {
            Ok(documents) => {
                let text = documents
                    .iter()
                    .map(|d| format!("<document name=\"{}\">\n{}\n</document>", d.name, d.content.trim_end()))
                    .collect::<Vec<_>>()
                    .join("\n\n");
                text_value(text, None)
            }
            Err(e) => tool_error_value(e.to_string()),
        },
        ToolAction::Get | ToolAction::Search => return None,
    })
}

fn list_resources<'p>(call: &Call<'_, 'p>) -> (Reply<'p>, Option<AuthzRecord<'p>>) {
    let store = &call.snapshot.documents;
    let mut resources = Vec::new();
    for collection in call.access.visible_collections() {
        for document in store.list(collection).unwrap_or_default() {
            // Listed iff `resources/read` allows it (argument constraints on `get` included).
            if !call.access.check_document(collection, &document.name).effect.permits() {
                continue;
            }
            let mut resource = json!({
                "uri": documents::resource_uri(collection, &document.name),
                "name": document.name,
                "mimeType": document.mime_type,
                "size": document.content.len(),
            });
            if let Some(title) = &document.title {
                resource["title"] = json!(title);
            }
            resources.push(resource);
        }
    }
    let count = resources.len();
    (
        Reply::Result(json!({"resources": resources})),
        Some(list_record(format!("resources:{count}"))),
    )
}

fn read_resource<'p>(call: &Call<'_, 'p>, params: &Map<String, Value>) -> (Reply<'p>, Option<AuthzRecord<'p>>) {
    let Some(uri) = params.get("uri").and_then(Value::as_str) else {
        return (
            error(200, code::INVALID_PARAMS, "Invalid params: uri must be a string", None),
            None,
        );
    };
    // MCP 2025-11-25 and earlier answer a missing resource with -32002; 2026-07-28 with -32602.
    let not_found_code = if call.revision.is_modern() {
        code::INVALID_PARAMS
    } else {
        code::RESOURCE_NOT_FOUND
    };
    let not_found = || error(200, not_found_code, "Resource not found", Some(json!({"uri": uri})));
    let (collection, name) = match documents::parse_resource_uri(uri) {
        Ok(parts) => parts,
        Err(_) => {
            // Refused before any lookup: audited as a denial, and counted when it tries to
            // leave a collection.
            let record = AuthzRecord {
                kind: AuthzKind::Resource,
                effect: Effect::Deny,
                reason: "invalid_uri",
                target: Some(uri.to_owned()),
                rule: None,
                granted_by: Vec::new(),
                missing: Vec::new(),
                path_traversal: looks_like_traversal(uri),
                argument: None,
                upstream: None,
                decided: std::time::Instant::now(),
            };
            return (not_found(), Some(record));
        }
    };
    let decision = call.access.check_document(&collection, &name);
    let authz = record(call, AuthzKind::Resource, uri, &decision);
    if decision.reason == Reason::UnknownCollection {
        return (not_found(), Some(authz));
    }
    if !decision.effect.permits() {
        return (
            denial(&decision, &authz.missing, &format!("resource {uri}")),
            Some(authz),
        );
    }
    match call.snapshot.documents.get(&collection, &name) {
        Ok(document) => (
            Reply::Result(
                json!({"contents": [{"uri": uri, "mimeType": document.mime_type, "text": document.content}]}),
            ),
            Some(authz),
        ),
        Err(_) => (not_found(), Some(authz)),
    }
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    use palisade_crds::{Policy, PolicyDocument};

    use super::*;
    use crate::documents::{DocumentLimits, DocumentStore};
    use crate::mcp::jsonrpc::{self, Id};

    /// A sample compiled into a temporary directory.
    fn sample(file: &str) -> (Policy, DocumentStore, std::path::PathBuf) {
        let dir = std::env::temp_dir().join(format!("palisade-prerendered-{}", rand::random::<u64>()));
        let documents_dir = dir.join("documents");
        let sample = Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("../config/samples")
            .join(file);
        let yaml = crate::policy_cli::compile(&[sample], Some(&dir.join("secrets")), Some(&documents_dir))
            .expect("the sample compiles");
        let policy = Policy::new(PolicyDocument::from_yaml(&yaml).expect("parses")).expect("valid");
        let collections: Vec<&str> = policy.document().collections.iter().map(|c| c.name.as_str()).collect();
        let documents = DocumentStore::load(&documents_dir, &collections, &DocumentLimits::default()).expect("loads");
        (policy, documents, dir)
    }

    #[test]
    fn prerendered_answers_are_what_serializing_per_request_gives() {
        // company-info: readAll tools; sso-docs: list, get and search tools.
        for file in ["company-info.yaml", "sso-docs.yaml"] {
            prerendered_answers_match(file);
        }
    }

    fn prerendered_answers_match(file: &str) {
        let (policy, documents, dir) = sample(file);
        let prerendered = Prerendered::new(&policy, &documents);
        let tools = policy.tools();
        assert!(
            tools
                .iter()
                .any(|t| matches!(t.action, ToolAction::ReadAll | ToolAction::List))
        );
        for revision in [Revision::Legacy20250618, Revision::Legacy20251125, Revision::Modern] {
            // tools/list for no tool, one tool, every tool.
            let subsets: [Vec<usize>; 3] = [vec![], vec![tools.len() - 1], (0..tools.len()).collect()];
            for subset in subsets {
                let expected = decorate_result(
                    revision,
                    "tools/list",
                    json!({"tools": subset.iter().map(|&i| tool_json(&tools[i])).collect::<Vec<_>>()}),
                );
                let (text, count) = prerendered.tools_list(subset.iter().copied(), revision);
                assert_eq!(count, subset.len());
                assert_eq!(
                    text,
                    serde_json::to_string(&expected).unwrap(),
                    "{revision:?} {subset:?}"
                );
            }
            // tools/call of every argument-free tool; none for the others.
            for (index, tool) in tools.iter().enumerate() {
                let family = usize::from(revision.is_modern());
                match execute_without_arguments(&documents, tool) {
                    Some(result) => {
                        let expected = decorate_result(revision, "tools/call", result);
                        let calls = prerendered.calls[index].as_ref().expect("prerendered");
                        assert_eq!(calls[family], serde_json::to_string(&expected).unwrap());
                    }
                    None => assert!(prerendered.calls[index].is_none(), "{}", tool.name),
                }
            }
        }
        std::fs::remove_dir_all(dir).ok();
    }

    #[test]
    fn a_serialized_result_is_wrapped_as_the_value_would_be() {
        let result = json!({"content": [{"type": "text", "text": "a \"quoted\" line\n"}], "isError": false});
        let serialized = serde_json::to_string(&result).unwrap();
        for id in [
            Id::Number(7),
            Id::Number(-1),
            Id::String("a\"b\\c\u{2028}".into()),
            Id::Null,
        ] {
            assert_eq!(
                jsonrpc::result_text(&id, &serialized),
                serde_json::to_string(&jsonrpc::result(&id, result.clone())).unwrap()
            );
        }
    }

    #[test]
    fn index_in_finds_only_elements_of_the_slice() {
        let items = [1u32, 2, 3];
        assert_eq!(index_in(&items, &items[2]), Some(2));
        let other = 2u32;
        assert_eq!(index_in(&items, &other), None);
    }
}
