//! Least privilege for the relay's two functions: each role's DynamoDB actions in
//! infra/relay/template.yaml are exactly those its code can call, read from the source with
//! `syn`:
//! 1. every `RelayStore` method of the DynamoDB adapter (src/dynamo.rs) is mapped to the SDK
//!    calls its body makes, through the adapter's own helpers (`self.get`, `self.put`);
//! 2. the store methods each function reaches: the HTTP function runs src/relay.rs (the
//!    webhook and trigger paths), the jobs function src/jobs.rs and `Relay::remember`;
//! 3. SDK calls become IAM actions; the template's statements for the table must grant
//!    exactly those (a missing one fails, and so does one granted but never called).
//!
//! And the KMS statements open only the purposes each role's configuration opens
//! (`Role::purposes`), under the relay's encryption context.

use std::collections::{BTreeMap, BTreeSet};

use serde_yaml::Value;
use square_relay::config::Role;
use syn::visit::Visit;

const SDK_OPS: &[(&str, &str)] = &[
    ("get_item", "dynamodb:GetItem"),
    ("put_item", "dynamodb:PutItem"),
    ("update_item", "dynamodb:UpdateItem"),
    ("delete_item", "dynamodb:DeleteItem"),
    ("query", "dynamodb:Query"),
    ("scan", "dynamodb:Scan"),
    ("batch_write_item", "dynamodb:BatchWriteItem"),
    ("batch_get_item", "dynamodb:BatchGetItem"),
];

fn src(file: &str) -> syn::File {
    let path = format!("{}/src/{file}", env!("CARGO_MANIFEST_DIR"));
    syn::parse_file(&std::fs::read_to_string(path).unwrap()).unwrap()
}

/// Method names called anywhere in a syntax tree (`x.m(..)`).
#[derive(Default)]
struct Calls(BTreeSet<String>);

impl<'a> Visit<'a> for Calls {
    fn visit_expr_method_call(&mut self, m: &'a syn::ExprMethodCall) {
        self.0.insert(m.method.to_string());
        syn::visit::visit_expr_method_call(self, m);
    }
}

fn calls_in_block(b: &syn::Block) -> BTreeSet<String> {
    let mut c = Calls::default();
    c.visit_block(b);
    c.0
}

/// Every fn of every impl block of `file` (and free fns): name → the methods it calls.
fn fns(file: &syn::File) -> BTreeMap<String, BTreeSet<String>> {
    let mut out = BTreeMap::new();
    for item in &file.items {
        match item {
            syn::Item::Impl(i) => {
                for it in &i.items {
                    if let syn::ImplItem::Fn(f) = it {
                        out.entry(f.sig.ident.to_string())
                            .or_insert_with(BTreeSet::new)
                            .extend(calls_in_block(&f.block));
                    }
                }
            }
            syn::Item::Fn(f) => {
                out.entry(f.sig.ident.to_string())
                    .or_insert_with(BTreeSet::new)
                    .extend(calls_in_block(&f.block));
            }
            _ => {}
        }
    }
    out
}

/// The SDK operations each adapter method reaches (following the adapter's helpers).
fn store_ops() -> BTreeMap<String, BTreeSet<&'static str>> {
    let adapter = fns(&src("dynamo.rs"));
    let op = |name: &str| SDK_OPS.iter().find(|(m, _)| *m == name).map(|(_, a)| *a);
    let mut out = BTreeMap::new();
    for name in adapter.keys() {
        let mut seen = BTreeSet::new();
        let mut todo = vec![name.clone()];
        let mut ops = BTreeSet::new();
        while let Some(f) = todo.pop() {
            if !seen.insert(f.clone()) {
                continue;
            }
            for c in adapter.get(&f).into_iter().flatten() {
                if let Some(a) = op(c) {
                    ops.insert(a);
                } else if adapter.contains_key(c) && c != &f {
                    todo.push(c.clone());
                }
            }
        }
        out.insert(name.clone(), ops);
    }
    out
}

/// The store methods a role's code calls.
fn reached(role: Role) -> BTreeSet<String> {
    let relay = fns(&src("relay.rs"));
    let mut calls = BTreeSet::new();
    match role {
        Role::Http => relay.values().for_each(|c| calls.extend(c.iter().cloned())),
        Role::Jobs => {
            fns(&src("jobs.rs"))
                .values()
                .for_each(|c| calls.extend(c.iter().cloned()));
            calls.extend(relay["remember"].iter().cloned());
        }
    }
    calls
}

fn granted(function: &str) -> (BTreeSet<String>, BTreeSet<String>) {
    let path = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../../infra/relay/template.yaml"
    );
    let t: Value = serde_yaml::from_str(&std::fs::read_to_string(path).unwrap()).unwrap();
    let statements = t["Resources"][function]["Properties"]["Policies"][0]["Statement"]
        .as_sequence()
        .unwrap()
        .clone();
    let mut dynamo = BTreeSet::new();
    let mut purposes = BTreeSet::new();
    for s in statements {
        let actions: Vec<String> = match &s["Action"] {
            Value::String(a) => vec![a.clone()],
            Value::Sequence(v) => v
                .iter()
                .filter_map(|a| a.as_str().map(str::to_owned))
                .collect(),
            _ => vec![],
        };
        for a in &actions {
            if a.starts_with("dynamodb:") {
                dynamo.insert(a.clone());
            }
            if a == "kms:Decrypt" {
                let cond = &s["Condition"];
                if let Some(eq) = cond.get("StringEquals") {
                    assert_eq!(
                        eq["kms:EncryptionContext:relay"].as_str(),
                        Some("square"),
                        "{function}: a KMS statement bound to the relay's context"
                    );
                    for p in eq["kms:EncryptionContext:purpose"].as_sequence().unwrap() {
                        purposes.insert(p.as_str().unwrap().to_owned());
                    }
                } else {
                    assert!(
                        cond.get("StringLike")
                            .and_then(|l| l.get("kms:EncryptionContext:aws:lambda:FunctionArn"))
                            .is_some(),
                        "{function}: a kms:Decrypt statement with no context condition"
                    );
                }
            }
        }
    }
    (dynamo, purposes)
}

#[test]
fn each_function_is_granted_exactly_what_its_code_calls() {
    let ops = store_ops();
    assert!(ops["remember_refs"].contains("dynamodb:BatchWriteItem"));
    assert!(
        ops["customer_of"].contains("dynamodb:GetItem"),
        "helpers are followed"
    );
    for (role, function) in [(Role::Http, "RelayFunction"), (Role::Jobs, "JobsFunction")] {
        let calls = reached(role);
        let needed: BTreeSet<String> = ops
            .iter()
            .filter(|(m, _)| calls.contains(*m))
            .flat_map(|(_, a)| a.iter().map(|s| (*s).to_owned()))
            .collect();
        let (dynamo, purposes) = granted(function);
        assert_eq!(
            dynamo, needed,
            "{function}: DynamoDB actions granted vs called"
        );
        let opened: BTreeSet<String> = role
            .purposes()
            .iter()
            .map(|p| p.as_str().to_owned())
            .collect();
        assert_eq!(
            purposes, opened,
            "{function}: KMS purposes granted vs opened"
        );
    }
}
