//! The Markdown reference of the CustomResourceDefinitions (`docs/crd-reference.md`), generated
//! from their OpenAPI schemas, so that it says exactly what the API server enforces.
//!
//! For each kind: its names, printer columns and validation rules, then one table per object
//! level (field path, type, required, default, description with the schema's constraints) and
//! that level's CEL rules (`x-kubernetes-validations`). Fields whose type is a Kubernetes API
//! type (an `Affinity`, a `Condition`, ...) are listed as one row that names the type, rather than
//! every field of it: see [`KUBERNETES_TYPES`].
//!
//! The output depends only on the schemas (properties in name order), so the committed file can
//! be checked for drift: `palisade-operator crds --reference docs/crd-reference.md` writes it and
//! `operator/tests/crd_reference.rs` compares.

use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::{
    CustomResourceDefinition, CustomResourceDefinitionVersion, JSONSchemaProps, JSONSchemaPropsOrArray,
    JSONSchemaPropsOrBool, ValidationRule,
};
use kube::CustomResourceExt;
use palisade_crds::{McpAccessPolicy, McpServer};

/// Where the reference lives, relative to the repository root.
pub const REFERENCE_FILE: &str = "docs/crd-reference.md";

/// A field whose schema is a Kubernetes API type: rendered as one row naming the type, not
/// expanded.
#[derive(Clone, Copy, Debug)]
pub struct ExternalType {
    /// The kind whose schema holds the field.
    pub kind: &'static str,
    /// Path of the field, as the reference writes it (`spec.scheduling.affinity`).
    pub path: &'static str,
    /// The Kubernetes type and its API group/version (`Affinity (core/v1)`).
    pub type_name: &'static str,
}

/// The Kubernetes API types inside Palisade's CRDs. Rendering fails when one of these paths is
/// not in the schemas, so the list cannot silently go stale.
pub const KUBERNETES_TYPES: &[ExternalType] = &[
    ExternalType {
        kind: "McpServer",
        path: "spec.resources",
        type_name: "ResourceRequirements (core/v1)",
    },
    ExternalType {
        kind: "McpServer",
        path: "spec.scheduling.affinity",
        type_name: "Affinity (core/v1)",
    },
    ExternalType {
        kind: "McpServer",
        path: "spec.scheduling.tolerations",
        type_name: "Toleration (core/v1)",
    },
    ExternalType {
        kind: "McpServer",
        path: "spec.scheduling.topologySpreadConstraints",
        type_name: "TopologySpreadConstraint (core/v1)",
    },
    ExternalType {
        kind: "McpServer",
        path: "spec.networkPolicy.ingressFrom",
        type_name: "NetworkPolicyPeer (networking.k8s.io/v1)",
    },
    ExternalType {
        kind: "McpServer",
        path: "spec.networkPolicy.metricsFrom",
        type_name: "NetworkPolicyPeer (networking.k8s.io/v1)",
    },
    ExternalType {
        kind: "McpServer",
        path: "status.conditions",
        type_name: "Condition (meta/v1)",
    },
    ExternalType {
        kind: "McpAccessPolicy",
        path: "spec.targetSelector",
        type_name: "LabelSelector (meta/v1)",
    },
    ExternalType {
        kind: "McpAccessPolicy",
        path: "status.conditions",
        type_name: "Condition (meta/v1)",
    },
];

/// Why a reference cannot be rendered.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum ReferenceError {
    /// A version of a CRD has no OpenAPI schema.
    #[error("CustomResourceDefinition {crd}, version {version}: no openAPIV3Schema")]
    NoSchema {
        /// The CRD's name.
        crd: String,
        /// The version.
        version: String,
    },
    /// An [`ExternalType`] names a field that is not in the schemas.
    #[error("{kind}: no field {path} (listed as the Kubernetes type {type_name})")]
    UnknownExternalType {
        /// The kind.
        kind: String,
        /// The path.
        path: String,
        /// The type it was listed as.
        type_name: String,
    },
}

/// The reference of Palisade's two CRDs, as committed in [`REFERENCE_FILE`].
pub fn reference() -> String {
    let body = render(&[McpServer::crd(), McpAccessPolicy::crd()], KUBERNETES_TYPES)
        .expect("KUBERNETES_TYPES names fields of the CRDs (unit-tested)");
    format!(
        "# CRD reference\n\n\
         <!-- Generated from the CustomResourceDefinitions by `palisade-operator crds --reference {REFERENCE_FILE}` \
         (`make crds`); operator/tests/crd_reference.rs fails when it is out of date. Do not edit by hand. -->\n\n\
         Every field of `McpServer` and `McpAccessPolicy` as the API server validates it: types, \
         defaults, limits and the CEL rules it checks on create and update (a request that breaks one \
         is refused with the rule's message). `kubectl explain mcpserver.spec` shows the same \
         descriptions on a cluster. What the operator checks beyond the schema (references across \
         objects, policy tests) is in [policy.md](policy.md).\n\n\
         The Default column shows the defaults the API server writes into the object; a \"Defaults to\" \
         in a description is applied later, by the operator or the server, and the field stays unset.\n\n\
         {body}"
    )
}

/// Renders the CRDs, each version that is served, as Markdown (from the second heading level
/// down). `external` lists fields to render as named Kubernetes types.
pub fn render(crds: &[CustomResourceDefinition], external: &[ExternalType]) -> Result<String, ReferenceError> {
    let mut out = String::new();
    let mut used = vec![false; external.len()];
    let mut kinds = Vec::new();
    for crd in crds {
        let versions: Vec<&CustomResourceDefinitionVersion> = crd.spec.versions.iter().filter(|v| v.served).collect();
        for version in &versions {
            let title = if versions.len() == 1 {
                crd.spec.names.kind.clone()
            } else {
                format!("{} {}", crd.spec.names.kind, version.name)
            };
            kinds.push((title.clone(), anchor(&[&title])));
        }
    }
    if kinds.len() > 1 {
        for (title, id) in &kinds {
            out.push_str(&format!("- [{title}](#{id})\n"));
        }
        out.push('\n');
    }
    let mut titles = kinds.into_iter();
    for crd in crds {
        for version in crd.spec.versions.iter().filter(|v| v.served) {
            let (title, id) = titles.next().expect("one title per served version");
            let schema = version
                .schema
                .as_ref()
                .and_then(|s| s.open_api_v3_schema.as_ref())
                .ok_or_else(|| ReferenceError::NoSchema {
                    crd: crd.metadata.name.clone().unwrap_or_default(),
                    version: version.name.clone(),
                })?;
            let kind = Kind {
                kind: &crd.spec.names.kind,
                id: &id,
                external,
            };
            out.push_str(&format!("<a id=\"{id}\"></a>\n\n## {title}\n\n"));
            if let Some(description) = &schema.description {
                out.push_str(&format!("{}\n\n", paragraph(description)));
            }
            out.push_str(&summary(crd, version));
            out.push_str(&printer_columns(version));
            let mut sections = Vec::new();
            kind.object(String::new(), schema, &mut sections, &mut used);
            for section in sections {
                out.push_str(&section);
            }
        }
    }
    if let Some((unused, _)) = external.iter().zip(&used).find(|(_, used)| !**used) {
        return Err(ReferenceError::UnknownExternalType {
            kind: unused.kind.into(),
            path: unused.path.into(),
            type_name: unused.type_name.into(),
        });
    }
    Ok(out.trim_end().to_owned() + "\n")
}

fn summary(crd: &CustomResourceDefinition, version: &CustomResourceDefinitionVersion) -> String {
    let names = &crd.spec.names;
    let mut rows = vec![
        ("API version", code(&format!("{}/{}", crd.spec.group, version.name))),
        ("Scope", crd.spec.scope.clone()),
    ];
    let mut name_list = vec![format!("{} (plural)", code(&names.plural))];
    if let Some(singular) = &names.singular {
        name_list.push(format!("{} (singular)", code(singular)));
    }
    for short in names.short_names.iter().flatten() {
        name_list.push(format!("{} (short)", code(short)));
    }
    rows.push(("Names", name_list.join(", ")));
    if let Some(categories) = names.categories.as_ref().filter(|c| !c.is_empty()) {
        rows.push((
            "Categories",
            categories.iter().map(|c| code(c)).collect::<Vec<_>>().join(", "),
        ));
    }
    let mut subresources = Vec::new();
    if let Some(sub) = &version.subresources {
        if sub.status.is_some() {
            subresources.push(code("status"));
        }
        if sub.scale.is_some() {
            subresources.push(code("scale"));
        }
    }
    if !subresources.is_empty() {
        rows.push(("Subresources", subresources.join(", ")));
    }
    if version.deprecated == Some(true) {
        rows.push((
            "Deprecated",
            version.deprecation_warning.clone().unwrap_or_else(|| "yes".into()),
        ));
    }
    let mut out = String::from("| | |\n|---|---|\n");
    for (name, value) in rows {
        out.push_str(&format!("| {name} | {} |\n", cell(&value)));
    }
    out.push('\n');
    out
}

fn printer_columns(version: &CustomResourceDefinitionVersion) -> String {
    let columns = match &version.additional_printer_columns {
        Some(columns) if !columns.is_empty() => columns,
        _ => return String::new(),
    };
    let described = columns.iter().any(|c| c.description.is_some());
    let mut out = String::from("Columns of `kubectl get`:\n\n| Column | Type | JSON path |");
    out.push_str(if described {
        " Description |\n|---|---|---|---|\n"
    } else {
        "\n|---|---|---|\n"
    });
    for column in columns {
        let mut name = column.name.clone();
        if column.priority.unwrap_or(0) > 0 {
            name.push_str(" (`-o wide`)");
        }
        let mut type_ = column.type_.clone();
        if let Some(format) = &column.format {
            type_.push_str(&format!(" ({format})"));
        }
        out.push_str(&format!(
            "| {} | {} | {} |",
            cell(&name),
            cell(&type_),
            cell(&code(&column.json_path))
        ));
        if described {
            out.push_str(&format!(" {} |", cell(column.description.as_deref().unwrap_or(""))));
        }
        out.push('\n');
    }
    out.push('\n');
    out
}

/// One kind being rendered.
struct Kind<'a> {
    kind: &'a str,
    /// Anchor of the kind's heading; sections' anchors extend it.
    id: &'a str,
    external: &'a [ExternalType],
}

/// A field's schema as the reference sees it.
enum Shape<'a> {
    /// Listed as a Kubernetes type.
    External(&'static str),
    /// A node with a section of its own: an object with properties, reached directly, through
    /// array items or through map values; the path of that section.
    Nested(String, &'a JSONSchemaProps),
    /// Everything else (scalars, free-form objects, arrays and maps of those).
    Leaf,
}

impl Kind<'_> {
    fn external(&self, path: &str, used: &mut [bool]) -> Option<&'static str> {
        let index = self
            .external
            .iter()
            .position(|e| e.kind == self.kind && e.path == path)?;
        used[index] = true;
        Some(self.external[index].type_name)
    }

    fn shape<'s>(&self, path: &str, schema: &'s JSONSchemaProps, used: &mut [bool]) -> Shape<'s> {
        if let Some(type_name) = self.external(path, used) {
            return Shape::External(type_name);
        }
        match nested(path, schema) {
            Some((path, node)) => Shape::Nested(path, node),
            None => Shape::Leaf,
        }
    }

    fn section_id(&self, path: &str) -> String {
        anchor(&[self.id, path])
    }

    /// Renders the section of the object at `path` (the kind's own section when empty), then the
    /// sections below it, depth first.
    fn object(&self, path: String, schema: &JSONSchemaProps, sections: &mut Vec<String>, used: &mut [bool]) {
        let mut out = String::new();
        if !path.is_empty() {
            out.push_str(&format!(
                "<a id=\"{}\"></a>\n\n### {}\n\n",
                self.section_id(&path),
                code(&path)
            ));
            if let Some(description) = &schema.description {
                out.push_str(&format!("{}\n\n", paragraph(description)));
            }
        }
        let required: Vec<&str> = schema.required.iter().flatten().map(String::as_str).collect();
        let mut rules: Vec<(String, &ValidationRule)> = Vec::new();
        collect_rules(&path, schema, &mut rules);
        let mut children = Vec::new();
        out.push_str("| Field | Type | Required | Default | Description |\n|---|---|---|---|---|\n");
        for (name, field) in schema.properties.iter().flatten() {
            let field_path = if path.is_empty() {
                name.clone()
            } else {
                format!("{path}.{name}")
            };
            let shape = self.shape(&field_path, field, used);
            let mut description = field.description.as_deref().map(cell_text).unwrap_or_default();
            let type_ = match &shape {
                Shape::External(type_name) => {
                    collect_rules(&field_path, field, &mut rules);
                    let explain = format!("{}.{}", self.kind.to_lowercase(), field_path.replace("[]", ""));
                    append(
                        &mut description,
                        &format!(
                            "Kubernetes type {}; `kubectl explain {explain}` lists its fields.",
                            code(type_name)
                        ),
                    );
                    type_of(field, None)
                }
                Shape::Nested(child, node) => {
                    children.push((child.clone(), *node));
                    type_of(field, Some(&self.section_id(child)))
                }
                Shape::Leaf => {
                    collect_leaf_rules(&field_path, field, &mut rules);
                    type_of(field, None)
                }
            };
            if !matches!(shape, Shape::External(_)) {
                for constraint in constraints(field) {
                    append(&mut description, &constraint);
                }
            }
            if let Shape::Nested(_, _) = shape {
                // Rules on the array or map itself; those of its objects are in their section.
                collect_container_rules(&field_path, field, &mut rules);
            }
            let default = field.default.as_ref().map(|d| code(&json(&d.0))).unwrap_or_default();
            out.push_str(&format!(
                "| {} | {} | {} | {} | {} |\n",
                cell(&code(&field_path)),
                cell(&type_),
                if required.contains(&name.as_str()) { "yes" } else { "" },
                cell(&default),
                description
            ));
        }
        out.push('\n');
        if !rules.is_empty() {
            out.push_str("Validation rules:\n\n");
            for (at, rule) in &rules {
                out.push_str(&format!("- {}\n", rule_line(at, rule)));
            }
            out.push('\n');
        }
        sections.push(out);
        for (child, node) in children {
            self.object(child, node, sections, used);
        }
    }
}

/// The object with properties that has its own section below a field: the field itself, its
/// array items or its map values (through any depth of arrays and maps), with the section path.
fn nested<'s>(path: &str, schema: &'s JSONSchemaProps) -> Option<(String, &'s JSONSchemaProps)> {
    if schema.properties.as_ref().is_some_and(|p| !p.is_empty()) {
        return Some((path.to_owned(), schema));
    }
    if let Some(items) = items(schema) {
        return nested(&format!("{path}[]"), items);
    }
    if let Some(values) = map_values(schema) {
        return nested(&format!("{path}.<key>"), values);
    }
    None
}

fn items(schema: &JSONSchemaProps) -> Option<&JSONSchemaProps> {
    match &schema.items {
        Some(JSONSchemaPropsOrArray::Schema(items)) => Some(items),
        _ => None,
    }
}

fn map_values(schema: &JSONSchemaProps) -> Option<&JSONSchemaProps> {
    match &schema.additional_properties {
        Some(JSONSchemaPropsOrBool::Schema(values)) => Some(values),
        _ => None,
    }
}

/// The rules of an object's own section: those on the object itself.
fn collect_rules<'s>(path: &str, schema: &'s JSONSchemaProps, rules: &mut Vec<(String, &'s ValidationRule)>) {
    for rule in schema.x_kubernetes_validations.iter().flatten() {
        rules.push((path.to_owned(), rule));
    }
}

/// The rules of a leaf field, its array items and its map values.
fn collect_leaf_rules<'s>(path: &str, schema: &'s JSONSchemaProps, rules: &mut Vec<(String, &'s ValidationRule)>) {
    collect_rules(path, schema, rules);
    if let Some(items) = items(schema) {
        collect_leaf_rules(&format!("{path}[]"), items, rules);
    }
    if let Some(values) = map_values(schema) {
        collect_leaf_rules(&format!("{path}.<key>"), values, rules);
    }
}

/// The rules of the arrays and maps between a field and the object that has its own section.
fn collect_container_rules<'s>(path: &str, schema: &'s JSONSchemaProps, rules: &mut Vec<(String, &'s ValidationRule)>) {
    if schema.properties.as_ref().is_some_and(|p| !p.is_empty()) {
        return;
    }
    collect_rules(path, schema, rules);
    if let Some(items) = items(schema) {
        collect_container_rules(&format!("{path}[]"), items, rules);
    }
    if let Some(values) = map_values(schema) {
        collect_container_rules(&format!("{path}.<key>"), values, rules);
    }
}

fn rule_line(at: &str, rule: &ValidationRule) -> String {
    let target = if at.is_empty() {
        "the object".to_owned()
    } else {
        code(at)
    };
    let mut line = format!("On {target}: {}", code(&rule.rule));
    if let Some(message) = &rule.message {
        line.push_str(&format!(". Message: {}", escape(message)));
    }
    if let Some(expression) = &rule.message_expression {
        line.push_str(&format!(". Message expression: {}", code(expression)));
    }
    if let Some(field_path) = &rule.field_path {
        line.push_str(&format!(". Reported at {}", code(field_path)));
    }
    if let Some(reason) = &rule.reason {
        line.push_str(&format!(". Reason {}", code(reason)));
    }
    if rule.optional_old_self == Some(true) {
        line.push_str(". Also checked on create (`optionalOldSelf`)");
    }
    line
}

/// The type of a field, linking the section of its nested object when it has one.
fn type_of(schema: &JSONSchemaProps, link: Option<&str>) -> String {
    if schema.x_kubernetes_int_or_string == Some(true) {
        return "int-or-string".into();
    }
    match schema.type_.as_deref() {
        Some("array") => match items(schema) {
            Some(items) => format!("array of {}", type_of(items, link)),
            None => "array".into(),
        },
        Some("object") => {
            let object = if schema.x_kubernetes_embedded_resource == Some(true) {
                "object (embedded resource)"
            } else {
                "object"
            };
            if schema.properties.as_ref().is_some_and(|p| !p.is_empty()) {
                match link {
                    Some(id) => format!("[{object}](#{id})"),
                    None => object.into(),
                }
            } else {
                match &schema.additional_properties {
                    Some(JSONSchemaPropsOrBool::Schema(values)) => format!("map of {}", type_of(values, link)),
                    Some(JSONSchemaPropsOrBool::Bool(true)) => "map of any".into(),
                    _ if schema.x_kubernetes_preserve_unknown_fields == Some(true) => format!("{object} (any fields)"),
                    _ => object.into(),
                }
            }
        }
        Some(scalar) => match &schema.format {
            Some(format) => format!("{scalar} ({format})"),
            None => scalar.into(),
        },
        None => {
            let alternatives = schema.any_of.as_ref().or(schema.one_of.as_ref());
            match alternatives {
                Some(alternatives) if !alternatives.is_empty() => {
                    let joiner = if schema.any_of.is_some() { "any of" } else { "one of" };
                    let types: Vec<String> = alternatives.iter().map(|a| type_of(a, link)).collect();
                    format!("{joiner} {}", types.join(", "))
                }
                _ => "any".into(),
            }
        }
    }
}

/// The constraints of a field, each a sentence; those of array items and map values prefixed.
fn constraints(schema: &JSONSchemaProps) -> Vec<String> {
    let mut out = own_constraints(schema);
    let mut inner = |prefix: &str, node: &JSONSchemaProps| {
        if node.properties.as_ref().is_none_or(|p| p.is_empty()) {
            for constraint in constraints(node) {
                out.push(format!("{prefix}: {}", lowercase_first(&constraint)));
            }
        }
    };
    if let Some(items) = items(schema) {
        inner("Each item", items);
    }
    if let Some(values) = map_values(schema) {
        inner("Each value", values);
    }
    out
}

fn own_constraints(schema: &JSONSchemaProps) -> Vec<String> {
    let mut out = Vec::new();
    // NB: `null` in the enum of an optional field means "unset", as for every optional field.
    let values: Vec<String> = schema
        .enum_
        .iter()
        .flatten()
        .filter(|v| !v.0.is_null())
        .map(|v| code(&json(&v.0)))
        .collect();
    if !values.is_empty() {
        out.push(format!("One of {}.", values.join(", ")));
    }
    if let Some(range) = bounds(schema.min_length, schema.max_length, "characters") {
        out.push(format!("Length {range}."));
    }
    if let Some(range) = bounds(schema.min_items, schema.max_items, "items") {
        out.push(format!("{}.", capitalize(&range)));
    }
    if let Some(range) = bounds(schema.min_properties, schema.max_properties, "entries") {
        out.push(format!("{}.", capitalize(&range)));
    }
    let number = |value: f64, exclusive: Option<bool>, inclusive: &str, strict: &str| {
        format!("{} {value}", if exclusive == Some(true) { strict } else { inclusive })
    };
    match (schema.minimum, schema.maximum) {
        (Some(min), Some(max)) if schema.exclusive_minimum != Some(true) && schema.exclusive_maximum != Some(true) => {
            out.push(format!("From {min} to {max}."));
        }
        (min, max) => {
            let mut parts = Vec::new();
            if let Some(min) = min {
                parts.push(number(min, schema.exclusive_minimum, "at least", "more than"));
            }
            if let Some(max) = max {
                parts.push(number(max, schema.exclusive_maximum, "at most", "less than"));
            }
            if !parts.is_empty() {
                out.push(format!("{}.", capitalize(&parts.join(", "))));
            }
        }
    }
    if let Some(multiple) = schema.multiple_of {
        out.push(format!("A multiple of {multiple}."));
    }
    if let Some(pattern) = &schema.pattern {
        out.push(format!("Matches {}.", code(pattern)));
    }
    if schema.unique_items == Some(true) {
        out.push("Items are unique.".into());
    }
    match schema.x_kubernetes_list_type.as_deref() {
        Some("map") => {
            let keys: Vec<String> = schema
                .x_kubernetes_list_map_keys
                .iter()
                .flatten()
                .map(|k| code(k))
                .collect();
            out.push(format!("List type `map`, keyed by {}.", keys.join(", ")));
        }
        Some(list_type) => out.push(format!("List type {}.", code(list_type))),
        None => {}
    }
    if let Some(map_type) = &schema.x_kubernetes_map_type {
        out.push(format!("Map type {}.", code(map_type)));
    }
    if schema.x_kubernetes_preserve_unknown_fields == Some(true)
        && schema.properties.as_ref().is_some_and(|p| !p.is_empty())
    {
        out.push("Unknown fields are kept.".into());
    }
    out
}

/// `1 to 253 characters`, `at most 64 items`, `at least 1 entries`.
fn bounds(min: Option<i64>, max: Option<i64>, unit: &str) -> Option<String> {
    match (min, max) {
        (Some(min), Some(max)) if min == max => Some(format!("exactly {min} {unit}")),
        (Some(min), Some(max)) => Some(format!("{min} to {max} {unit}")),
        (Some(min), None) => Some(format!("at least {min} {unit}")),
        (None, Some(max)) => Some(format!("at most {max} {unit}")),
        (None, None) => None,
    }
}

fn capitalize(text: &str) -> String {
    let mut chars = text.chars();
    match chars.next() {
        Some(first) => first.to_uppercase().chain(chars).collect(),
        None => String::new(),
    }
}

fn lowercase_first(text: &str) -> String {
    let mut chars = text.chars();
    match chars.next() {
        Some(first) => first.to_lowercase().chain(chars).collect(),
        None => String::new(),
    }
}

/// A JSON value as written in YAML: strings bare (unless empty), everything else as JSON.
fn json(value: &serde_json::Value) -> String {
    match value {
        serde_json::Value::String(s) if !s.is_empty() => s.clone(),
        other => other.to_string(),
    }
}

/// Appends a sentence to a table cell's text.
fn append(text: &mut String, sentence: &str) {
    if !text.is_empty() {
        text.push(' ');
    }
    text.push_str(&cell(sentence));
}

/// A Markdown code span that holds `text` exactly, whatever backticks it contains.
fn code(text: &str) -> String {
    let mut longest = 0;
    let mut run = 0;
    for c in text.chars() {
        if c == '`' {
            run += 1;
            longest = longest.max(run);
        } else {
            run = 0;
        }
    }
    let fence = "`".repeat(longest + 1);
    let pad = if text.starts_with('`') || text.ends_with('`') {
        " "
    } else {
        ""
    };
    format!("{fence}{pad}{text}{pad}{fence}")
}

/// Text (not Markdown) with Markdown's special characters escaped.
fn escape(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        if matches!(c, '\\' | '`' | '*' | '_' | '[' | ']' | '<' | '>' | '|' | '#') {
            out.push('\\');
        }
        out.push(c);
    }
    out
}

/// Markdown for a table cell: `|` escaped (also inside code spans, as GitHub's tables need).
fn cell(markdown: &str) -> String {
    markdown.replace('|', "\\|")
}

/// A description (Markdown from doc comments) for a table cell: one line, paragraphs kept apart.
fn cell_text(description: &str) -> String {
    cell(&paragraph(description).replace("\n\n", "<br><br>"))
}

/// A description as a Markdown paragraph: lines joined, blank lines kept.
fn paragraph(description: &str) -> String {
    description
        .trim()
        .split("\n\n")
        .map(|p| p.split_whitespace().collect::<Vec<_>>().join(" "))
        .collect::<Vec<_>>()
        .join("\n\n")
}

/// An HTML id from parts: lowercase ASCII letters and digits, other runs as one `-`.
fn anchor(parts: &[&str]) -> String {
    let mut id = String::new();
    for part in parts {
        for c in part.chars() {
            if c.is_ascii_alphanumeric() {
                id.push(c.to_ascii_lowercase());
            } else if !id.is_empty() && !id.ends_with('-') {
                id.push('-');
            }
        }
        if !id.is_empty() && !id.ends_with('-') {
            id.push('-');
        }
    }
    id.trim_end_matches('-').to_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn crd(yaml: &str) -> CustomResourceDefinition {
        yaml_serde::from_str(yaml).unwrap_or_else(|e| panic!("{e}\n{yaml}"))
    }

    /// A small CRD with each schema feature the renderer handles.
    const WIDGET: &str = r#"
apiVersion: apiextensions.k8s.io/v1
kind: CustomResourceDefinition
metadata: {name: widgets.example.com}
spec:
  group: example.com
  names: {kind: Widget, plural: widgets, singular: widget, shortNames: [wd], categories: [all]}
  scope: Namespaced
  versions:
  - name: v1
    served: true
    storage: true
    subresources: {status: {}}
    additionalPrinterColumns:
    - {name: Size, type: integer, jsonPath: .spec.size}
    - {name: Mode, type: string, jsonPath: .spec.mode, priority: 1}
    schema:
      openAPIV3Schema:
        description: A widget.
        type: object
        required: [spec]
        x-kubernetes-validations:
        - {rule: "size(self.metadata.name) <= 20", message: "name at most 20 characters"}
        properties:
          spec:
            description: |-
              What the widget
              should be.
            type: object
            required: [size]
            x-kubernetes-validations:
            - {rule: "self.size > 0 || self.mode == 'Slow'", message: "size 0 needs mode: Slow", fieldPath: .size, reason: FieldValueInvalid}
            properties:
              size:
                description: Size in *units*.
                type: integer
                format: int32
                minimum: 0
                maximum: 10
              mode:
                description: How it runs.
                type: string
                enum: [Fast, Slow, null]
                nullable: true
                default: Fast
              parts:
                description: The parts.
                type: array
                maxItems: 4
                x-kubernetes-validations:
                - {rule: "self.all(p, self.exists_one(q, q.name == p.name))", message: "part names must be unique"}
                items:
                  description: One part.
                  type: object
                  required: [name]
                  x-kubernetes-validations:
                  - {rule: "!has(self.color) || self.color != ''", message: "color must not be empty"}
                  properties:
                    name: {description: "Name `a|b`.", type: string, minLength: 1, maxLength: 8, pattern: "^[a-z]+|x$"}
                    color: {type: string}
                    tags:
                      type: array
                      default: []
                      items: {type: string, maxLength: 5}
                      x-kubernetes-validations:
                      - {rule: "self.all(t, t != 'x')", message: "no tag x"}
              labels:
                description: Labels.
                type: object
                additionalProperties: {type: string, maxLength: 63}
              slots:
                description: Named slots.
                type: object
                additionalProperties:
                  type: object
                  properties:
                    capacity: {description: Capacity., x-kubernetes-int-or-string: true}
              extra:
                description: Anything.
                x-kubernetes-preserve-unknown-fields: true
              settings:
                description: Free-form settings.
                type: object
                x-kubernetes-preserve-unknown-fields: true
              selector:
                description: Which pods.
                type: object
                properties:
                  matchLabels: {type: object, additionalProperties: {type: string}}
          status:
            type: object
            nullable: true
            properties:
              ready: {type: boolean, default: false}
"#;

    const WIDGET_REFERENCE: &str = r#"<a id="widget"></a>

## Widget

A widget.

| | |
|---|---|
| API version | `example.com/v1` |
| Scope | Namespaced |
| Names | `widgets` (plural), `widget` (singular), `wd` (short) |
| Categories | `all` |
| Subresources | `status` |

Columns of `kubectl get`:

| Column | Type | JSON path |
|---|---|---|
| Size | integer | `.spec.size` |
| Mode (`-o wide`) | string | `.spec.mode` |

| Field | Type | Required | Default | Description |
|---|---|---|---|---|
| `spec` | [object](#widget-spec) | yes |  | What the widget should be. |
| `status` | [object](#widget-status) |  |  |  |

Validation rules:

- On the object: `size(self.metadata.name) <= 20`. Message: name at most 20 characters

<a id="widget-spec"></a>

### `spec`

What the widget should be.

| Field | Type | Required | Default | Description |
|---|---|---|---|---|
| `spec.extra` | any |  |  | Anything. |
| `spec.labels` | map of string |  |  | Labels. Each value: length at most 63 characters. |
| `spec.mode` | string |  | `Fast` | How it runs. One of `Fast`, `Slow`. |
| `spec.parts` | array of [object](#widget-spec-parts) |  |  | The parts. At most 4 items. |
| `spec.selector` | object |  |  | Which pods. Kubernetes type `LabelSelector (meta/v1)`; `kubectl explain widget.spec.selector` lists its fields. |
| `spec.settings` | object (any fields) |  |  | Free-form settings. |
| `spec.size` | integer (int32) | yes |  | Size in *units*. From 0 to 10. |
| `spec.slots` | map of [object](#widget-spec-slots-key) |  |  | Named slots. |

Validation rules:

- On `spec`: `self.size > 0 || self.mode == 'Slow'`. Message: size 0 needs mode: Slow. Reported at `.size`. Reason `FieldValueInvalid`
- On `spec.parts`: `self.all(p, self.exists_one(q, q.name == p.name))`. Message: part names must be unique

<a id="widget-spec-parts"></a>

### `spec.parts[]`

One part.

| Field | Type | Required | Default | Description |
|---|---|---|---|---|
| `spec.parts[].color` | string |  |  |  |
| `spec.parts[].name` | string | yes |  | Name `a\|b`. Length 1 to 8 characters. Matches `^[a-z]+\|x$`. |
| `spec.parts[].tags` | array of string |  | `[]` | Each item: length at most 5 characters. |

Validation rules:

- On `spec.parts[]`: `!has(self.color) || self.color != ''`. Message: color must not be empty
- On `spec.parts[].tags`: `self.all(t, t != 'x')`. Message: no tag x

<a id="widget-spec-slots-key"></a>

### `spec.slots.<key>`

| Field | Type | Required | Default | Description |
|---|---|---|---|---|
| `spec.slots.<key>.capacity` | int-or-string |  |  | Capacity. |

<a id="widget-status"></a>

### `status`

| Field | Type | Required | Default | Description |
|---|---|---|---|---|
| `status.ready` | boolean |  | `false` |  |
"#;

    const SELECTOR: ExternalType = ExternalType {
        kind: "Widget",
        path: "spec.selector",
        type_name: "LabelSelector (meta/v1)",
    };

    #[test]
    fn renders_every_schema_feature() {
        let rendered = render(&[crd(WIDGET)], &[SELECTOR]).unwrap();
        if rendered != WIDGET_REFERENCE {
            let first = rendered
                .lines()
                .zip(WIDGET_REFERENCE.lines())
                .position(|(a, b)| a != b)
                .unwrap_or(0);
            panic!(
                "first difference at line {}:\n{}\n--- whole output ---\n{rendered}",
                first + 1,
                rendered.lines().nth(first).unwrap_or("")
            );
        }
    }

    #[test]
    fn an_external_type_that_names_no_field_is_an_error() {
        let stale = ExternalType {
            kind: "Widget",
            path: "spec.gone",
            type_name: "Gone (v1)",
        };
        assert_eq!(
            render(&[crd(WIDGET)], &[SELECTOR, stale]).unwrap_err().to_string(),
            "Widget: no field spec.gone (listed as the Kubernetes type Gone (v1))"
        );
    }

    #[test]
    fn without_the_external_type_its_object_is_expanded() {
        let rendered = render(&[crd(WIDGET)], &[]).unwrap();
        assert!(rendered.contains("| `spec.selector` | [object](#widget-spec-selector) |"));
        assert!(rendered.contains("| `spec.selector.matchLabels` | map of string |"));
    }

    #[test]
    fn several_kinds_get_a_table_of_contents() {
        let other = WIDGET
            .replace("Widget", "Gadget")
            .replace("widget", "gadget")
            .replace("wd", "gd");
        let rendered = render(&[crd(WIDGET), crd(&other)], &[SELECTOR]).unwrap();
        assert!(rendered.starts_with("- [Widget](#widget)\n- [Gadget](#gadget)\n\n"));
        assert!(rendered.contains("<a id=\"gadget-spec-parts\"></a>"));
    }

    #[test]
    fn code_spans_hold_backticks_and_text_is_escaped() {
        assert_eq!(code("a"), "`a`");
        assert_eq!(code("a`b"), "``a`b``");
        assert_eq!(code("`a"), "`` `a ``");
        assert_eq!(escape("'*' or 'docs:*'"), r"'\*' or 'docs:\*'");
        assert_eq!(
            anchor(&["mcpserver", "spec.auth.issuers[]"]),
            "mcpserver-spec-auth-issuers"
        );
    }

    /// Every CEL rule and every field of Palisade's CRDs, outside the Kubernetes types, is in
    /// the reference.
    #[test]
    fn the_reference_lists_every_rule_and_field() {
        let reference = reference();
        for crd in [McpServer::crd(), McpAccessPolicy::crd()] {
            let kind = crd.spec.names.kind.clone();
            let schema = crd.spec.versions[0]
                .schema
                .as_ref()
                .and_then(|s| s.open_api_v3_schema.as_ref())
                .unwrap();
            let mut fields = Vec::new();
            walk(&kind, "", schema, &mut fields);
            assert!(fields.len() > 20, "{kind}: {} fields", fields.len());
            for field in fields {
                assert!(
                    reference.contains(&format!("| `{field}` |")),
                    "{kind}: {field} is missing"
                );
            }
        }
        assert_eq!(
            reference.lines().filter(|l| l.starts_with("- On ")).count(),
            count_rules(&McpServer::crd()) + count_rules(&McpAccessPolicy::crd())
        );
    }

    fn walk(kind: &str, path: &str, schema: &JSONSchemaProps, fields: &mut Vec<String>) {
        if KUBERNETES_TYPES.iter().any(|e| e.kind == kind && e.path == path) {
            return;
        }
        for (name, field) in schema.properties.iter().flatten() {
            let field_path = if path.is_empty() {
                name.clone()
            } else {
                format!("{path}.{name}")
            };
            fields.push(field_path.clone());
            walk(kind, &field_path, field, fields);
        }
        if let Some(items) = items(schema) {
            walk(kind, &format!("{path}[]"), items, fields);
        }
        if let Some(values) = map_values(schema) {
            walk(kind, &format!("{path}.<key>"), values, fields);
        }
    }

    fn count_rules(crd: &CustomResourceDefinition) -> usize {
        let schema = serde_json::to_value(crd).unwrap();
        fn count(value: &serde_json::Value) -> usize {
            match value {
                serde_json::Value::Object(map) => {
                    map.get("x-kubernetes-validations")
                        .and_then(|v| v.as_array())
                        .map_or(0, Vec::len)
                        + map.values().map(count).sum::<usize>()
                }
                serde_json::Value::Array(items) => items.iter().map(count).sum(),
                _ => 0,
            }
        }
        count(&schema)
    }
}
