//! Least privilege: each function's IAM policy in `template.yaml` allows only the calls its
//! code can make, and allows every one of them.
//!
//! What the code can call is read from the source, not from a list kept by hand:
//! 1. Every function (free or method) of the function's crate, of `pil-aws` and of
//!    `shared` is parsed with `syn` (test modules and `shared::testing` left out).
//! 2. A call graph joins them: paths (`module::f(..)`, `f(..)` through the file's `use`s) and
//!    method calls (`x.m(..)`, by name and argument count). A call of a port trait's method
//!    (`deps.actions.update_action(a)`) leads to the AWS adapter's implementation of it in
//!    `pil-aws` (each port has one), so a function reaches only the adapter methods the
//!    domain code it runs calls.
//! 3. From the function's entry points (every function of its crate: each deployment has a
//!    crate of its own, named by its `BuildProperties.Binary`) every reachable AWS SDK
//!    fluent call (`self.client.put_item()`, ...) is mapped to its IAM action
//!    ([`SDK_OPS`]); a `TransactWriteItems` is authorised per item (`Put` needs
//!    `dynamodb:PutItem`, and so on), so its items' builders are read too. Query's index
//!    resources come from the index-name constants the reachable store code names.
//!
//! Some permissions are needed by the platform for the template's own configuration rather
//! than by an SDK call; they are derived from the template too: `kms:Decrypt` for a function
//! whose environment is encrypted with the key (`KmsKeyArn`) or that consumes a KMS-encrypted
//! queue, and `kms:GenerateDataKey` + `kms:Decrypt` for a function that sends to one.
//!
//! The test fails listing, per function, actions granted but never called (over-grant) and
//! calls made but not granted; likewise DynamoDB index and SQS queue resources (a queue is
//! needed when the function's code reads its URL variable). Policies SAM adds by itself (logs,
//! X-Ray, the SQS poller role of an SQS event source) are not in `Policies` and not compared.
//!
//! The data key is shared, so every KMS statement must say what it may open
//! ([`kms_scopes`]): practice secrets are sealed under the encryption context
//! `{"practice", "purpose"}`, and a statement for them names the purposes
//! (`kms:EncryptionContext:purpose`), which must be exactly those whose
//! `SecretContext::for_{webhook,trigger,link}` constructor the function's code reaches
//! (`for_any` counts as all; the internet-facing page function: `link` only). The environment's statement is bound to
//! Lambda's own context (`kms:EncryptionContext:aws:lambda:FunctionArn`), the encrypted
//! queues' to SQS (`kms:ViaService`); a KMS statement with none of these could open any
//! practice's secrets and fails the test.

use std::collections::{BTreeMap, BTreeSet, HashMap, VecDeque};
use std::path::{Path, PathBuf};

use serde_yaml::Value;
use syn::visit::Visit;

/// AWS SDK fluent operations (the client method name) and the IAM actions each needs.
/// `transact_write_items` has none of its own: each item needs its own action (see
/// [`TRANSACT_ITEMS`]). An SDK call missing here fails the test, so the table grows with
/// the code.
const SDK_OPS: &[(&str, &[&str])] = &[
    ("get_item", &["dynamodb:GetItem"]),
    ("put_item", &["dynamodb:PutItem"]),
    ("update_item", &["dynamodb:UpdateItem"]),
    ("delete_item", &["dynamodb:DeleteItem"]),
    ("query", &["dynamodb:Query"]),
    ("scan", &["dynamodb:Scan"]),
    ("batch_get_item", &["dynamodb:BatchGetItem"]),
    ("batch_write_item", &["dynamodb:BatchWriteItem"]),
    ("transact_write_items", &[]),
    ("transact_get_items", &["dynamodb:GetItem"]),
    ("describe_table", &["dynamodb:DescribeTable"]),
    ("send_message", &["sqs:SendMessage"]),
    ("send_message_batch", &["sqs:SendMessage"]),
    (
        "change_message_visibility",
        &["sqs:ChangeMessageVisibility"],
    ),
    ("receive_message", &["sqs:ReceiveMessage"]),
    ("delete_message", &["sqs:DeleteMessage"]),
    ("get_queue_attributes", &["sqs:GetQueueAttributes"]),
    ("put_events", &["events:PutEvents"]),
    // SESv2 SendEmail is authorised as ses:SendEmail.
    ("send_email", &["ses:SendEmail"]),
    ("encrypt", &["kms:Encrypt"]),
    ("decrypt", &["kms:Decrypt"]),
    ("generate_data_key", &["kms:GenerateDataKey"]),
    ("describe_stacks", &["cloudformation:DescribeStacks"]),
];

/// The items of a `TransactWriteItems` (their builders in the calling function) and what
/// each needs (DynamoDB authorises a transaction per item; there is no action of its own).
const TRANSACT_ITEMS: &[(&str, &str)] = &[
    ("Put", "dynamodb:PutItem"),
    ("Update", "dynamodb:UpdateItem"),
    ("Delete", "dynamodb:DeleteItem"),
    ("ConditionCheck", "dynamodb:ConditionCheckItem"),
];

/// SAM policy templates and the actions they grant (from SAM's `policy_templates.json`).
/// The template uses none today; one that is used but missing here fails the test.
const SAM_POLICY_TEMPLATES: &[(&str, &[&str])] = &[
    (
        "DynamoDBCrudPolicy",
        &[
            "dynamodb:GetItem",
            "dynamodb:DeleteItem",
            "dynamodb:PutItem",
            "dynamodb:Scan",
            "dynamodb:Query",
            "dynamodb:UpdateItem",
            "dynamodb:BatchWriteItem",
            "dynamodb:BatchGetItem",
            "dynamodb:DescribeTable",
            "dynamodb:ConditionCheckItem",
        ],
    ),
    (
        "DynamoDBReadPolicy",
        &[
            "dynamodb:GetItem",
            "dynamodb:Scan",
            "dynamodb:Query",
            "dynamodb:BatchGetItem",
            "dynamodb:DescribeTable",
        ],
    ),
    (
        "DynamoDBWritePolicy",
        &[
            "dynamodb:PutItem",
            "dynamodb:UpdateItem",
            "dynamodb:BatchWriteItem",
        ],
    ),
    ("SQSSendMessagePolicy", &["sqs:SendMessage*"]),
    (
        "SQSPollerPolicy",
        &[
            "sqs:ChangeMessageVisibility",
            "sqs:ChangeMessageVisibilityBatch",
            "sqs:DeleteMessage",
            "sqs:DeleteMessageBatch",
            "sqs:GetQueueAttributes",
            "sqs:ReceiveMessage",
        ],
    ),
    ("EventBridgePutEventsPolicy", &["events:PutEvents"]),
    ("KMSDecryptPolicy", &["kms:Decrypt"]),
    ("KMSEncryptPolicy", &["kms:Encrypt"]),
    (
        "SESCrudPolicy",
        &[
            "ses:GetIdentityVerificationAttributes",
            "ses:SendEmail",
            "ses:SendRawEmail",
            "ses:VerifyEmailIdentity",
        ],
    ),
];

/// The arity of a function named as a value rather than called.
const ANY_ARITY: usize = usize::MAX;

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

// ---------------------------------------------------------------------------------------------
// The call graph
// ---------------------------------------------------------------------------------------------

#[derive(Debug, Default)]
struct FnNode {
    krate: String,
    module: String,
    /// The impl's self type (last path segment), for methods.
    self_ty: Option<String>,
    /// The implemented trait (last path segment), for trait impl methods.
    of_trait: Option<String>,
    name: String,
    /// Arguments without `self`.
    arity: usize,
    has_self: bool,
    /// What the body calls.
    method_calls: Vec<(String, usize, String)>,
    path_calls: Vec<(Vec<String>, usize)>,
    /// Identifiers named in the body (index-name constants).
    idents: BTreeSet<String>,
    /// `Put::builder()` and the like, for transactions.
    builders: BTreeSet<String>,
    /// Environment variable names read (`config.get("X")`, `config.opt("X")`, ...).
    env_reads: BTreeSet<String>,
}

struct BodyVisitor<'a> {
    node: &'a mut FnNode,
}

impl<'ast> Visit<'ast> for BodyVisitor<'_> {
    fn visit_expr_method_call(&mut self, m: &'ast syn::ExprMethodCall) {
        let recv = quote_str(&m.receiver);
        let name = m.method.to_string();
        if matches!(name.as_str(), "get" | "opt" | "num")
            && recv.contains("config")
            && let Some(syn::Expr::Lit(syn::ExprLit {
                lit: syn::Lit::Str(s),
                ..
            })) = m.args.first()
        {
            self.node.env_reads.insert(s.value());
        }
        self.node.method_calls.push((name, m.args.len(), recv));
        syn::visit::visit_expr_method_call(self, m);
    }
    fn visit_expr_call(&mut self, c: &'ast syn::ExprCall) {
        if let syn::Expr::Path(p) = &*c.func {
            let segs: Vec<String> = p
                .path
                .segments
                .iter()
                .map(|s| s.ident.to_string())
                .collect();
            if segs.len() >= 2 && segs[segs.len() - 1] == "builder" {
                self.node.builders.insert(segs[segs.len() - 2].clone());
            }
            self.node.path_calls.push((segs, c.args.len()));
        }
        syn::visit::visit_expr_call(self, c);
    }
    fn visit_expr_path(&mut self, p: &'ast syn::ExprPath) {
        // A function named as a value (`.map(action_of)`) may be called: any arity.
        let segs: Vec<String> = p
            .path
            .segments
            .iter()
            .map(|s| s.ident.to_string())
            .collect();
        self.node.path_calls.push((segs, ANY_ARITY));
        syn::visit::visit_expr_path(self, p);
    }
    fn visit_ident(&mut self, i: &'ast proc_macro2::Ident) {
        self.node.idents.insert(i.to_string());
    }
    fn visit_macro(&mut self, mac: &'ast syn::Macro) {
        // Calls inside `try_join!(..)`, `vec![..]`, `format!(..)`: parse the arguments as
        // expressions where they are (logging macros' `field = %x` are not, and are skipped).
        if let Ok(args) = mac.parse_body_with(
            syn::punctuated::Punctuated::<syn::Expr, syn::Token![,]>::parse_terminated,
        ) {
            for a in &args {
                self.visit_expr(a);
            }
        }
    }
}

fn quote_str(t: &syn::Expr) -> String {
    quote::ToTokens::to_token_stream(t).to_string()
}

/// Parsed source of one crate: its functions and, per file, the names its `use`s import
/// (name → the module it comes from).
#[derive(Default)]
struct Graph {
    nodes: Vec<FnNode>,
    /// (crate, module) → imported name → module (last segment) it comes from.
    imports: HashMap<(String, String), HashMap<String, String>>,
    /// `const NAME: &str = "value";` anywhere.
    str_consts: HashMap<String, String>,
}

fn is_cfg_test(attrs: &[syn::Attribute]) -> bool {
    attrs.iter().any(|a| {
        a.path().is_ident("cfg") && {
            let s = a
                .meta
                .require_list()
                .map(|l| l.tokens.to_string())
                .unwrap_or_default();
            s.contains("test") || s.contains("feature = \"testing\"")
        }
    })
}

fn last_seg_of_type(t: &syn::Type) -> Option<String> {
    match t {
        syn::Type::Path(p) => p.path.segments.last().map(|s| s.ident.to_string()),
        _ => None,
    }
}

fn arity(sig: &syn::Signature) -> usize {
    sig.inputs
        .iter()
        .filter(|a| matches!(a, syn::FnArg::Typed(_)))
        .count()
}

impl Graph {
    fn add_crate(&mut self, krate: &str, src: &Path) {
        let mut files = Vec::new();
        collect_rs(src, &mut files);
        for f in files {
            let rel = f.strip_prefix(src).unwrap().to_string_lossy().to_string();
            if rel == "testing.rs" || rel.starts_with("bin/") {
                continue;
            }
            let module = rel
                .trim_end_matches(".rs")
                .trim_end_matches("/mod")
                .replace('/', "::");
            let text = std::fs::read_to_string(&f).unwrap();
            let file = syn::parse_file(&text).unwrap_or_else(|e| panic!("{}: {e}", f.display()));
            self.add_items(krate, &module, &file.items);
        }
    }

    fn add_items(&mut self, krate: &str, module: &str, items: &[syn::Item]) {
        for item in items {
            match item {
                syn::Item::Fn(f) if !is_cfg_test(&f.attrs) => {
                    let mut node = FnNode {
                        krate: krate.into(),
                        module: module.into(),
                        name: f.sig.ident.to_string(),
                        arity: arity(&f.sig),
                        ..Default::default()
                    };
                    BodyVisitor { node: &mut node }.visit_block(&f.block);
                    self.nodes.push(node);
                }
                syn::Item::Impl(i) if !is_cfg_test(&i.attrs) => {
                    let self_ty = last_seg_of_type(&i.self_ty);
                    let of_trait = i
                        .trait_
                        .as_ref()
                        .and_then(|(_, p, _)| p.segments.last().map(|s| s.ident.to_string()));
                    for ii in &i.items {
                        if let syn::ImplItem::Fn(f) = ii {
                            let mut node = FnNode {
                                krate: krate.into(),
                                module: module.into(),
                                self_ty: self_ty.clone(),
                                of_trait: of_trait.clone(),
                                name: f.sig.ident.to_string(),
                                arity: arity(&f.sig),
                                has_self: f.sig.receiver().is_some(),
                                ..Default::default()
                            };
                            BodyVisitor { node: &mut node }.visit_block(&f.block);
                            self.nodes.push(node);
                        }
                    }
                }
                syn::Item::Trait(t) => {
                    // Default method bodies.
                    for ti in &t.items {
                        if let syn::TraitItem::Fn(f) = ti
                            && let Some(b) = &f.default
                        {
                            let mut node = FnNode {
                                krate: krate.into(),
                                module: module.into(),
                                of_trait: Some(t.ident.to_string()),
                                name: f.sig.ident.to_string(),
                                arity: arity(&f.sig),
                                has_self: f.sig.receiver().is_some(),
                                ..Default::default()
                            };
                            BodyVisitor { node: &mut node }.visit_block(b);
                            self.nodes.push(node);
                        }
                    }
                }
                syn::Item::Mod(m) if !is_cfg_test(&m.attrs) => {
                    if let Some((_, items)) = &m.content {
                        self.add_items(krate, &format!("{module}::{}", m.ident), items);
                    }
                }
                syn::Item::Use(u) => {
                    let map = self
                        .imports
                        .entry((krate.into(), module.into()))
                        .or_default();
                    use_names(&u.tree, None, map);
                }
                syn::Item::Const(c) => {
                    if let syn::Expr::Lit(syn::ExprLit {
                        lit: syn::Lit::Str(s),
                        ..
                    }) = &*c.expr
                    {
                        self.str_consts.insert(c.ident.to_string(), s.value());
                    }
                }
                _ => {}
            }
        }
    }

    /// Port traits: traits with methods and no default bodies that an adapter in `pil-aws`
    /// implements. (trait, method) → arity.
    fn port_methods(&self) -> HashMap<String, Vec<(String, usize)>> {
        let mut out: HashMap<String, Vec<(String, usize)>> = HashMap::new();
        for n in &self.nodes {
            if n.krate == "pil-aws"
                && let Some(t) = &n.of_trait
            {
                out.entry(n.name.clone())
                    .or_default()
                    .push((t.clone(), n.arity));
            }
        }
        out
    }

    /// Indices of the functions a call can reach.
    fn resolve(&self, from: &FnNode) -> Vec<usize> {
        let mut out = Vec::new();
        let imports = self.imports.get(&(from.krate.clone(), from.module.clone()));
        for (segs, argc) in &from.path_calls {
            let name = segs.last().unwrap();
            let qualifier = if segs.len() >= 2 {
                Some(segs[segs.len() - 2].clone())
            } else {
                imports.and_then(|m| m.get(name)).cloned()
            };
            let candidates: Vec<usize> = self
                .nodes
                .iter()
                .enumerate()
                .filter(|(_, n)| {
                    &n.name == name
                        && (*argc == ANY_ARITY || n.arity + usize::from(n.has_self) == *argc)
                        // A bare name (`f(..)`, or a value such as a local variable) is never a
                        // method: methods are named through their type or a receiver.
                        && !(segs.len() == 1 && n.has_self)
                })
                .map(|(i, _)| i)
                .collect();
            let qualified: Vec<usize> = candidates
                .iter()
                .copied()
                .filter(|&i| {
                    let n = &self.nodes[i];
                    match qualifier.as_deref() {
                        Some("Self") => n.self_ty == from.self_ty,
                        Some(q) => {
                            n.self_ty.as_deref() == Some(q)
                                || n.of_trait.as_deref() == Some(q)
                                || n.module.rsplit("::").next() == Some(q)
                        }
                        None => n.krate == from.krate && n.module == from.module,
                    }
                })
                .collect();
            // Unqualified and not found beside the caller: any function of that name.
            out.extend(if qualified.is_empty() && qualifier.is_none() {
                candidates
            } else {
                qualified
            });
        }
        let ports = self.port_methods();
        for (name, argc, _recv) in &from.method_calls {
            let is_port = ports
                .get(name)
                .is_some_and(|v| v.iter().any(|(_, a)| a == argc));
            for (i, n) in self.nodes.iter().enumerate() {
                if &n.name != name || n.arity != *argc || !n.has_self {
                    continue;
                }
                // A port method leads to the adapter's implementation (not the in-memory
                // test doubles, which are not compiled into functions).
                if is_port && n.of_trait.is_some() && n.krate != "pil-aws" {
                    continue;
                }
                out.push(i);
            }
        }
        out
    }
}

fn use_names(tree: &syn::UseTree, parent: Option<&str>, map: &mut HashMap<String, String>) {
    match tree {
        syn::UseTree::Path(p) => use_names(&p.tree, Some(&p.ident.to_string()), map),
        syn::UseTree::Name(n) => {
            if let Some(parent) = parent {
                let name = n.ident.to_string();
                if name == "self" {
                    return;
                }
                map.insert(name, parent.to_owned());
            }
        }
        syn::UseTree::Rename(r) => {
            if let Some(parent) = parent {
                map.insert(r.rename.to_string(), parent.to_owned());
            }
        }
        syn::UseTree::Group(g) => {
            for t in &g.items {
                use_names(t, parent, map);
            }
        }
        syn::UseTree::Glob(_) => {}
    }
}

fn collect_rs(dir: &Path, out: &mut Vec<PathBuf>) {
    let mut entries: Vec<_> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    entries.sort();
    for p in entries {
        if p.is_dir() {
            collect_rs(&p, out);
        } else if p.extension().is_some_and(|e| e == "rs") {
            out.push(p);
        }
    }
}

/// What a deployment's code can do.
#[derive(Debug, Default)]
struct Reach {
    /// IAM action → where (`Type::method`) it is called.
    actions: BTreeMap<String, BTreeSet<String>>,
    /// DynamoDB indexes its reachable store code names.
    indexes: BTreeSet<String>,
    env_reads: BTreeSet<String>,
    unknown_sdk_calls: BTreeSet<String>,
    /// Secret purposes whose `SecretContext::for_<purpose>` constructor it reaches
    /// (`SecretContext::for_any`, which takes any purpose, counts as all of them).
    purposes: BTreeSet<String>,
}

/// The purposes a practice secret can be sealed for: `SecretContext`'s constructors are named
/// after them (`for_webhook`, ...).
fn all_purposes() -> BTreeSet<String> {
    shared::practice::SecretKind::ALL
        .iter()
        .map(|k| k.as_str().to_owned())
        .collect()
}

fn reach(g: &Graph, krate: &str, index_names: &BTreeSet<String>) -> Reach {
    let sdk: HashMap<&str, &[&str]> = SDK_OPS.iter().copied().collect();
    let mut seen = vec![false; g.nodes.len()];
    let mut queue: VecDeque<usize> = g
        .nodes
        .iter()
        .enumerate()
        .filter(|(_, n)| n.krate == krate)
        .map(|(i, _)| i)
        .collect();
    for &i in &queue {
        seen[i] = true;
    }
    let mut r = Reach::default();
    while let Some(i) = queue.pop_front() {
        let n = &g.nodes[i];
        let at = format!(
            "{}{}",
            n.self_ty
                .as_deref()
                .map(|t| format!("{t}::"))
                .unwrap_or_default(),
            n.name
        );
        r.env_reads.extend(n.env_reads.iter().cloned());
        if n.self_ty.as_deref() == Some("SecretContext") && !n.has_self {
            match n.name.strip_prefix("for_") {
                Some(p) if all_purposes().contains(p) => drop(r.purposes.insert(p.to_owned())),
                Some("any") => r.purposes.extend(all_purposes()),
                _ => {}
            }
        }
        for (m, argc, recv) in &n.method_calls {
            // `self.client.put_item()`, or a client by its service name (`clients.sqs`).
            let on_client = ["client", "dynamodb", "sqs", "eventbridge", "sesv2", "kms"]
                .iter()
                .any(|c| recv.ends_with(c));
            // Client methods that are not operations.
            let not_an_operation = ["clone", "config", "to_owned", "as_ref"].contains(&m.as_str());
            if *argc == 0 && on_client && !not_an_operation {
                match sdk.get(m.as_str()) {
                    Some(actions) => {
                        for a in *actions {
                            r.actions.entry((*a).into()).or_default().insert(at.clone());
                        }
                        if *m == "transact_write_items" {
                            for (b, a) in TRANSACT_ITEMS {
                                if n.builders.contains(*b) {
                                    r.actions.entry((*a).into()).or_default().insert(at.clone());
                                }
                            }
                        }
                    }
                    None => {
                        r.unknown_sdk_calls.insert(format!("{at}: {recv}.{m}()"));
                    }
                }
            }
        }
        if n.krate == "pil-aws" {
            for id in &n.idents {
                if let Some(v) = g.str_consts.get(id)
                    && index_names.contains(v)
                {
                    r.indexes.insert(v.clone());
                }
            }
        }
        for j in g.resolve(n) {
            if !seen[j] {
                seen[j] = true;
                queue.push_back(j);
            }
        }
    }
    r
}

// ---------------------------------------------------------------------------------------------
// The template
// ---------------------------------------------------------------------------------------------

fn untag(v: &Value) -> (Option<String>, &Value) {
    match v {
        Value::Tagged(t) => (Some(t.tag.to_string()), &t.value),
        other => (None, other),
    }
}

/// A resource reference as a short name: `!GetAtt X.Arn` → `X`, `!Sub "${X.Arn}/index/N"` →
/// `X/index/N`, `!Ref X` → `X`; anything else as written.
fn resource_name(v: &Value) -> String {
    let (tag, inner) = untag(v);
    let s = match inner {
        Value::String(s) => s.clone(),
        other => format!("{other:?}"),
    };
    match tag.as_deref() {
        Some("!GetAtt") | Some("!Ref") => s.trim_end_matches(".Arn").to_owned(),
        Some("!Sub") => s.replace(".Arn}", "}").replace("${", "").replace('}', ""),
        _ => s,
    }
}

fn as_list(v: &Value) -> Vec<&Value> {
    match v {
        Value::Sequence(s) => s.iter().collect(),
        other => vec![other],
    }
}

fn str_list(v: &Value) -> Vec<String> {
    as_list(v)
        .into_iter()
        .filter_map(|x| x.as_str().map(str::to_owned))
        .collect()
}

/// Granted: action → resources.
fn granted(policies: &Value) -> (BTreeMap<String, BTreeSet<String>>, Vec<String>) {
    let templates: HashMap<&str, &[&str]> = SAM_POLICY_TEMPLATES.iter().copied().collect();
    let mut out: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    let mut problems = Vec::new();
    for p in as_list(policies) {
        let Value::Mapping(m) = p else {
            problems.push(format!(
                "managed policy {p:?}: not compared; use inline statements"
            ));
            continue;
        };
        if let Some(stmts) = m.get("Statement") {
            for st in as_list(stmts) {
                if st.get("Effect").and_then(Value::as_str) != Some("Allow") {
                    continue;
                }
                let resources: Vec<String> = st
                    .get("Resource")
                    .map(|r| as_list(r).into_iter().map(resource_name).collect())
                    .unwrap_or_default();
                for a in st.get("Action").map(str_list).unwrap_or_default() {
                    out.entry(a).or_default().extend(resources.iter().cloned());
                }
            }
            continue;
        }
        for (k, v) in m {
            let name = k.as_str().unwrap_or_default();
            match templates.get(name) {
                Some(actions) => {
                    let res = match v {
                        Value::Mapping(args) => {
                            args.values().map(resource_name).collect::<BTreeSet<_>>()
                        }
                        _ => BTreeSet::new(),
                    };
                    for a in *actions {
                        out.entry((*a).into())
                            .or_default()
                            .extend(res.iter().cloned());
                    }
                }
                None => problems.push(format!(
                    "SAM policy template {name}: add its actions to SAM_POLICY_TEMPLATES"
                )),
            }
        }
    }
    (out, problems)
}

/// What one KMS statement of a function's policy lets it use the data key for, read from its
/// condition.
#[derive(Debug, Clone, PartialEq, Eq)]
enum KmsScope {
    /// Practice secrets of these purposes (`kms:EncryptionContext:purpose`).
    Purposes(BTreeSet<String>),
    /// The function's environment, which Lambda decrypts under
    /// `kms:EncryptionContext:aws:lambda:FunctionArn`.
    Environment,
    /// Encrypted queues, through SQS only (`kms:ViaService` `sqs.…`).
    ViaSqs,
    /// Anything: no condition that confines it.
    Unconfined,
}

/// Each `Allow` statement of `policies` with a `kms:` action: its actions and its scope.
fn kms_scopes(policies: &Value) -> Vec<(BTreeSet<String>, KmsScope)> {
    let mut out = Vec::new();
    for p in as_list(policies) {
        let Some(stmts) = p.get("Statement") else {
            continue;
        };
        for st in as_list(stmts) {
            if st.get("Effect").and_then(Value::as_str) != Some("Allow") {
                continue;
            }
            let actions: BTreeSet<String> = st
                .get("Action")
                .map(str_list)
                .unwrap_or_default()
                .into_iter()
                .filter(|a| a.starts_with("kms:"))
                .collect();
            if actions.is_empty() {
                continue;
            }
            let mut scope = KmsScope::Unconfined;
            if let Some(Value::Mapping(ops)) = st.get("Condition") {
                for cond in ops.values() {
                    let Value::Mapping(keys) = cond else { continue };
                    for (k, v) in keys {
                        let values: Vec<String> = as_list(v)
                            .into_iter()
                            .map(|x| {
                                let (_, inner) = untag(x);
                                inner.as_str().unwrap_or_default().to_owned()
                            })
                            .collect();
                        match k.as_str().unwrap_or_default() {
                            "kms:EncryptionContext:purpose" => {
                                scope = KmsScope::Purposes(values.into_iter().collect());
                            }
                            "kms:EncryptionContext:aws:lambda:FunctionArn"
                                if values.iter().all(|v| v.contains(":lambda:")) =>
                            {
                                scope = KmsScope::Environment;
                            }
                            "kms:ViaService" if values.iter().all(|v| v.starts_with("sqs.")) => {
                                scope = KmsScope::ViaSqs;
                            }
                            _ => {}
                        }
                    }
                }
            }
            out.push((actions, scope));
        }
    }
    out
}

#[test]
fn kms_statements_are_read_by_their_conditions() {
    let policies: Value = serde_yaml::from_str(
        r#"
- Statement:
    - Effect: Allow
      Action: kms:Decrypt
      Resource: "*"
      Condition:
        StringEquals:
          kms:EncryptionContext:purpose: [webhook, trigger]
    - Effect: Allow
      Action: kms:Decrypt
      Resource: "*"
      Condition:
        StringLike:
          kms:EncryptionContext:aws:lambda:FunctionArn: !Sub "arn:${AWS::Partition}:lambda:*"
    - Effect: Allow
      Action: [kms:Decrypt, kms:GenerateDataKey]
      Resource: "*"
      Condition:
        StringEquals:
          kms:ViaService: !Sub "sqs.${AWS::Region}.${AWS::URLSuffix}"
    - Effect: Allow
      Action: kms:Decrypt
      Resource: "*"
    - Effect: Allow
      Action: sqs:SendMessage
      Resource: "*"
"#,
    )
    .unwrap();
    let set = |v: &[&str]| v.iter().map(|s| (*s).to_owned()).collect::<BTreeSet<_>>();
    assert_eq!(
        kms_scopes(&policies),
        [
            (
                set(&["kms:Decrypt"]),
                KmsScope::Purposes(set(&["webhook", "trigger"]))
            ),
            (set(&["kms:Decrypt"]), KmsScope::Environment),
            (
                set(&["kms:Decrypt", "kms:GenerateDataKey"]),
                KmsScope::ViaSqs
            ),
            (set(&["kms:Decrypt"]), KmsScope::Unconfined),
        ]
    );
}

#[test]
fn each_function_is_granted_exactly_the_calls_its_code_makes() {
    let root = root();
    let template: Value =
        serde_yaml::from_str(&std::fs::read_to_string(root.join("template.yaml")).unwrap())
            .unwrap();
    let resources = template["Resources"].as_mapping().unwrap();
    let globals = &template["Globals"]["Function"];

    // The table's index names, and which queues are encrypted with a key.
    let mut index_names = BTreeSet::new();
    let mut table = String::new();
    let mut encrypted_queues = BTreeSet::new();
    for (k, r) in resources {
        let id = k.as_str().unwrap().to_owned();
        match r["Type"].as_str() {
            Some("AWS::DynamoDB::Table") => {
                table = id.clone();
                for gsi in as_list(&r["Properties"]["GlobalSecondaryIndexes"]) {
                    if let Some(n) = gsi["IndexName"].as_str() {
                        index_names.insert(n.to_owned());
                    }
                }
            }
            Some("AWS::SQS::Queue") if !r["Properties"]["KmsMasterKeyId"].is_null() => {
                encrypted_queues.insert(id.clone());
            }
            _ => {}
        }
    }
    assert!(!table.is_empty() && !index_names.is_empty());

    let mut graph = Graph::default();
    graph.add_crate("shared", &root.join("shared/src"));
    graph.add_crate("pil-aws", &root.join("infra/pil-aws/src"));
    let mut crates_added = BTreeSet::new();

    let mut report = Vec::new();
    let mut functions = 0;
    let mut page_purposes = None;
    for (k, r) in resources {
        if r["Type"].as_str() != Some("AWS::Serverless::Function") {
            continue;
        }
        functions += 1;
        let id = k.as_str().unwrap();
        let binary = r["Metadata"]["BuildProperties"]["Binary"]
            .as_str()
            .unwrap_or_else(|| panic!("{id}: no Metadata.BuildProperties.Binary"));
        assert!(
            crates_added.insert(binary.to_owned()),
            "{id}: binary {binary} is another function's too (one crate per deployment)"
        );
        graph.add_crate(binary, &root.join("functions").join(binary).join("src"));
        let reach = reach(&graph, binary, &index_names);
        let mut problems: Vec<String> = reach
            .unknown_sdk_calls
            .iter()
            .map(|c| format!("SDK call not in SDK_OPS (add its IAM action): {c}"))
            .collect();

        let props = &r["Properties"];
        let (grants, p) = granted(&props["Policies"]);
        problems.extend(p);

        // Needed: the SDK calls, plus what the template's own configuration needs.
        let mut needed: BTreeMap<String, BTreeSet<String>> = reach.actions.clone();
        let env_key = if props["KmsKeyArn"].is_null() {
            &globals["KmsKeyArn"]
        } else {
            &props["KmsKeyArn"]
        };
        // What the data key is needed for, besides the code's own KMS calls (practice secrets).
        let env_encrypted = !env_key.is_null();
        let mut sqs_kms: BTreeSet<String> = BTreeSet::new();
        if env_encrypted {
            needed
                .entry("kms:Decrypt".into())
                .or_default()
                .insert("(Lambda: the KMS-encrypted environment)".into());
        }
        if let Some(events) = props["Events"].as_mapping() {
            for e in events.values() {
                if e["Type"].as_str() == Some("SQS") {
                    let q = resource_name(&e["Properties"]["Queue"]);
                    if encrypted_queues.contains(&q) {
                        sqs_kms.insert("kms:Decrypt".into());
                        needed
                            .entry("kms:Decrypt".into())
                            .or_default()
                            .insert(format!("(SQS event source: {q} is KMS-encrypted)"));
                    }
                }
            }
        }
        // Queues the code reaches through the URL variables it reads.
        let env = |name: &str| -> Option<String> {
            let own = &props["Environment"]["Variables"][name];
            let v = if own.is_null() {
                &globals["Environment"]["Variables"][name]
            } else {
                own
            };
            (!v.is_null()).then(|| resource_name(v))
        };
        let queues_used: BTreeSet<String> = reach
            .env_reads
            .iter()
            .filter_map(|v| env(v))
            .filter(|q| {
                resources
                    .get(q.as_str())
                    .is_some_and(|r| r["Type"] == "AWS::SQS::Queue")
            })
            .collect();
        if needed.contains_key("sqs:SendMessage")
            && queues_used.iter().any(|q| encrypted_queues.contains(q))
        {
            for a in ["kms:GenerateDataKey", "kms:Decrypt"] {
                sqs_kms.insert(a.into());
                needed
                    .entry(a.into())
                    .or_default()
                    .insert("(sqs:SendMessage to a KMS-encrypted queue)".into());
            }
        }

        // KMS, statement by statement: each confined to what it is for (see the module doc).
        let scopes = kms_scopes(&props["Policies"]);
        let secret_calls: BTreeSet<&String> = reach
            .actions
            .keys()
            .filter(|a| a.starts_with("kms:"))
            .collect();
        let mut purposes_granted = BTreeSet::new();
        let (mut env_granted, mut sqs_granted_kms) = (false, BTreeSet::new());
        for (actions, scope) in &scopes {
            match scope {
                KmsScope::Unconfined => problems.push(format!(
                    "{actions:?} on the data key without a condition on kms:EncryptionContext:purpose, the environment's kms:EncryptionContext:aws:lambda:FunctionArn or kms:ViaService (SQS): it could open any practice's secrets"
                )),
                KmsScope::Purposes(p) => {
                    for a in actions {
                        if !secret_calls.contains(a) {
                            problems.push(format!(
                                "over-grant: {a} for practice secrets ({p:?}), but the code makes no such call"
                            ));
                        }
                    }
                    purposes_granted.extend(p.iter().cloned());
                }
                KmsScope::Environment => {
                    if actions.iter().any(|a| a != "kms:Decrypt") {
                        problems.push(format!(
                            "over-grant: {actions:?} for the environment, which needs kms:Decrypt only"
                        ));
                    }
                    env_granted = true;
                }
                KmsScope::ViaSqs => sqs_granted_kms.extend(actions.iter().cloned()),
            }
        }
        let purposes_needed = if secret_calls.is_empty() {
            BTreeSet::new()
        } else {
            reach.purposes.clone()
        };
        if !secret_calls.is_empty() && purposes_needed.is_empty() {
            problems.push(format!(
                "the code calls {secret_calls:?} but reaches no SecretContext::for_* constructor: which secrets does it open?"
            ));
        }
        for p in purposes_granted.difference(&purposes_needed) {
            problems.push(format!(
                "over-grant: kms:Decrypt of {p} secrets (kms:EncryptionContext:purpose), which this function's code never opens"
            ));
        }
        for p in purposes_needed.difference(&purposes_granted) {
            problems.push(format!(
                "not granted: kms:Decrypt of {p} secrets (a statement with kms:EncryptionContext:purpose {p})"
            ));
        }
        if env_encrypted != env_granted {
            problems.push(if env_encrypted {
                "not granted: kms:Decrypt for the KMS-encrypted environment (a statement on kms:EncryptionContext:aws:lambda:FunctionArn)".to_owned()
            } else {
                "over-grant: kms:Decrypt for an environment that is not KMS-encrypted".to_owned()
            });
        }
        if sqs_granted_kms != sqs_kms {
            problems.push(format!(
                "KMS through SQS (kms:ViaService) grants {sqs_granted_kms:?}, but the encrypted queues it reads and sends to need {sqs_kms:?}"
            ));
        }

        for (action, res) in &grants {
            if !needed.contains_key(action) {
                problems.push(format!(
                    "over-grant: {action} on {res:?}, but no code path of this function calls it"
                ));
            }
        }
        for (action, at) in &needed {
            if !grants.contains_key(action) {
                problems.push(format!("not granted: {action}, called by {at:?}"));
            }
        }

        // DynamoDB indexes: granted index resources (a wildcard means every index) against
        // the indexes the reachable store code queries.
        if let Some(res) = grants.get("dynamodb:Query") {
            let mut granted_idx = BTreeSet::new();
            for r in res {
                if let Some(idx) = r.strip_prefix(&format!("{table}/index/")) {
                    if idx == "*" {
                        granted_idx.extend(index_names.iter().cloned());
                    } else {
                        granted_idx.insert(idx.to_owned());
                    }
                }
            }
            for i in granted_idx.difference(&reach.indexes) {
                problems.push(format!(
                    "over-grant: index {i}, which this function never queries"
                ));
            }
            for i in reach.indexes.difference(&granted_idx) {
                problems.push(format!("not granted: Query on index {i}"));
            }
        } else if !reach.indexes.is_empty() && needed.contains_key("dynamodb:Query") {
            problems.push(format!("not granted: Query on indexes {:?}", reach.indexes));
        }
        // SQS: the queues granted are the queues whose URL the code reads.
        let sqs_granted: BTreeSet<String> = grants
            .iter()
            .filter(|(a, _)| a.starts_with("sqs:"))
            .flat_map(|(_, r)| r.iter().cloned())
            .collect();
        for q in sqs_granted.difference(&queues_used) {
            problems.push(format!(
                "over-grant: SQS actions on {q}, whose URL this function's code never reads"
            ));
        }
        if id == "ApprovalPageFunction" {
            page_purposes = Some(purposes_granted.clone());
        }
        if !problems.is_empty() {
            report.push(format!("{id} ({binary}):\n  - {}", problems.join("\n  - ")));
        }
        eprintln!(
            "{id}: calls {:?}; indexes {:?}; queues {:?}; secret purposes {:?}",
            needed.keys().collect::<Vec<_>>(),
            reach.indexes,
            queues_used,
            purposes_needed
        );
    }
    assert!(functions >= 5, "expected the template's five functions");
    assert!(
        report.is_empty(),
        "IAM policies differ from the calls the code makes:\n{}",
        report.join("\n")
    );
    assert_eq!(
        page_purposes,
        Some(BTreeSet::from(["link".to_owned()])),
        "the internet-facing page function opens link keys and nothing else"
    );
}
