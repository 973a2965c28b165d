//! Reads `template.yaml` and creates its resources in the emulator. There is no second list
//! of resources: tables, queues (with their redrive policies), the bus, rules and targets, the
//! KMS key, the functions' environment, their HTTP routes and SQS event-source mappings, and
//! the schedule all come from the template.

use std::collections::{BTreeMap, HashMap};
use std::path::Path;

use anyhow::{Context, Result, anyhow, bail};
use aws_sdk_dynamodb::types::{
    AttributeDefinition, BillingMode, GlobalSecondaryIndex, KeySchemaElement, KeyType, Projection,
    ProjectionType, ScalarAttributeType, TimeToLiveSpecification,
};
use serde_yaml::Value;

use pil_aws::Clients;

pub const ACCOUNT: &str = "123456789012";

/// One HTTP route of a function (`Type: HttpApi` event).
#[derive(Debug, Clone)]
pub struct Route {
    pub method: String,
    pub path: String,
    pub function: String,
}

/// One SQS event-source mapping.
#[derive(Debug, Clone)]
pub struct Mapping {
    pub function: String,
    pub queue_url: String,
    pub batch_size: i32,
    pub partial_batch: bool,
}

/// A schedule: its expression, target queue and input.
#[derive(Debug, Clone)]
pub struct Schedule {
    pub name: String,
    pub expression: String,
    pub queue_url: String,
    pub input: String,
}

#[derive(Debug, Clone)]
pub struct Function {
    /// Logical id in the template.
    pub name: String,
    /// Cargo binary name (`Metadata.BuildProperties.Binary`).
    pub binary: String,
    pub env: HashMap<String, String>,
}

/// What the template created.
#[derive(Debug, Clone, Default)]
pub struct Deployed {
    pub functions: Vec<Function>,
    pub routes: Vec<Route>,
    pub mappings: Vec<Mapping>,
    pub schedules: Vec<Schedule>,
    /// Functions invoked by a schedule of their own (`Type: ScheduleV2` event): function,
    /// expression. The local stack runs them on demand.
    pub function_schedules: Vec<(String, String)>,
    /// Template Outputs, resolved.
    pub outputs: BTreeMap<String, String>,
    /// Logical id → physical id (`Ref`).
    pub refs: BTreeMap<String, String>,
    /// Resource types present but not emulated (alarms, roles, log groups...).
    pub not_emulated: Vec<String>,
}

#[derive(Debug, Default)]
struct Ctx {
    region: String,
    stack: String,
    params: HashMap<String, String>,
    refs: HashMap<String, String>,
    attrs: HashMap<String, HashMap<String, String>>,
    /// The template's `Conditions`, unevaluated.
    conditions: HashMap<String, Value>,
}

/// What `!Ref AWS::NoValue` resolves to: removed from the mapping or list that holds it.
fn no_value() -> Value {
    Value::Tagged(Box::new(serde_yaml::value::TaggedValue {
        tag: serde_yaml::value::Tag::new("AWS::NoValue"),
        value: Value::Null,
    }))
}

fn is_no_value(v: &Value) -> bool {
    matches!(v, Value::Tagged(t) if t.tag == "AWS::NoValue")
}

impl Ctx {
    fn pseudo(&self, name: &str) -> Option<String> {
        Some(match name {
            "AWS::Region" => self.region.clone(),
            "AWS::AccountId" => ACCOUNT.into(),
            "AWS::StackName" => self.stack.clone(),
            "AWS::URLSuffix" => "amazonaws.com".into(),
            "AWS::Partition" => "aws".into(),
            _ => return None,
        })
    }

    fn reference(&self, name: &str) -> Result<String> {
        self.pseudo(name)
            .or_else(|| self.params.get(name).cloned())
            .or_else(|| self.refs.get(name).cloned())
            .ok_or_else(|| anyhow!("unresolved Ref {name}"))
    }

    fn get_att(&self, path: &str) -> Result<String> {
        let (res, attr) = path
            .split_once('.')
            .ok_or_else(|| anyhow!("bad GetAtt {path}"))?;
        self.attrs
            .get(res)
            .and_then(|a| a.get(attr))
            .cloned()
            .ok_or_else(|| anyhow!("unresolved GetAtt {path}"))
    }

    fn sub(&self, s: &str) -> Result<String> {
        let mut out = String::new();
        let mut rest = s;
        while let Some(i) = rest.find("${") {
            out.push_str(&rest[..i]);
            let end = rest[i..].find('}').ok_or_else(|| anyhow!("bad Sub"))? + i;
            let name = &rest[i + 2..end];
            out.push_str(&if name.contains('.') && !name.starts_with("AWS::") {
                self.get_att(name)?
            } else {
                self.reference(name)?
            });
            rest = &rest[end + 1..];
        }
        out.push_str(rest);
        Ok(out)
    }

    /// Evaluates the named condition of the template's `Conditions`.
    fn condition(&self, name: &str) -> Result<bool> {
        let expr = self
            .conditions
            .get(name)
            .ok_or_else(|| anyhow!("unknown condition {name}"))?;
        self.truth(expr)
    }

    /// A condition expression: `Fn::Equals`, `Fn::Not`, `Fn::And`, `Fn::Or`, `Condition`
    /// (short or long form).
    fn truth(&self, v: &Value) -> Result<bool> {
        let (f, arg) = match v {
            Value::Tagged(t) => (t.tag.to_string(), &t.value),
            Value::Mapping(m) if m.len() == 1 => {
                let (k, a) = m.iter().next().ok_or_else(|| anyhow!("empty"))?;
                (format!("!{}", str_of(k)?.trim_start_matches("Fn::")), a)
            }
            _ => bail!("not a condition expression"),
        };
        let list = |a: &Value| -> Result<Vec<Value>> {
            Ok(a.as_sequence()
                .ok_or_else(|| anyhow!("{f} takes a list"))?
                .clone())
        };
        match f.as_str() {
            "!Condition" => self.condition(str_of(arg)?),
            "!Equals" => {
                let args = list(arg)?;
                let [a, b] = args.as_slice() else {
                    bail!("!Equals takes two values");
                };
                Ok(scalar(&self.resolve(a)?) == scalar(&self.resolve(b)?))
            }
            "!Not" => Ok(!self.truth(list(arg)?.first().ok_or_else(|| anyhow!("!Not []"))?)?),
            "!And" => list(arg)?
                .iter()
                .try_fold(true, |acc, c| Ok(acc && self.truth(c)?)),
            "!Or" => list(arg)?
                .iter()
                .try_fold(false, |acc, c| Ok(acc || self.truth(c)?)),
            other => bail!("condition function {other} is not supported by the local stack"),
        }
    }

    /// `Fn::If [condition, if true, if false]`: the chosen branch, resolved.
    fn if_branch(&self, arg: &Value) -> Result<Value> {
        let [c, yes, no] = arg.as_sequence().map(Vec::as_slice).unwrap_or_default() else {
            bail!("!If takes [condition, value if true, value if false]");
        };
        self.resolve(if self.condition(str_of(c)?)? { yes } else { no })
    }

    /// Whether a resource is created: its `Condition`, if any, holds.
    fn creates(&self, resource: &Value) -> Result<bool> {
        resource
            .get("Condition")
            .map_or(Ok(true), |c| self.condition(str_of(c)?))
    }

    /// A mapping's values resolved; a key whose value is `AWS::NoValue` is dropped.
    fn resolve_mapping(&self, m: &serde_yaml::Mapping) -> Result<Value> {
        let mut out = serde_yaml::Mapping::new();
        for (k, v) in m {
            let v = self.resolve(v)?;
            if !is_no_value(&v) {
                out.insert(k.clone(), v);
            }
        }
        Ok(Value::Mapping(out))
    }

    /// Resolves intrinsics (short and long form) to plain values.
    fn resolve(&self, v: &Value) -> Result<Value> {
        Ok(match v {
            Value::Tagged(t) if t.tag == "If" => self.if_branch(&t.value)?,
            Value::Tagged(t) if t.tag == "Ref" && t.value.as_str() == Some("AWS::NoValue") => {
                no_value()
            }
            Value::Tagged(t) => {
                let inner = self.resolve(&t.value)?;
                match t.tag.to_string().as_str() {
                    "!Ref" => Value::String(self.reference(str_of(&inner)?)?),
                    "!GetAtt" => Value::String(self.get_att(&getatt_path(&inner)?)?),
                    "!Sub" => Value::String(self.sub(str_of(&inner)?)?),
                    other => bail!("intrinsic {other} is not supported by the local stack"),
                }
            }
            Value::Mapping(m) if m.len() == 1 => {
                let (k, val) = m.iter().next().ok_or_else(|| anyhow!("empty"))?;
                match k.as_str() {
                    Some("Fn::If") => self.if_branch(val)?,
                    Some("Ref") if val.as_str() == Some("AWS::NoValue") => no_value(),
                    Some("Ref") => Value::String(self.reference(str_of(&self.resolve(val)?)?)?),
                    Some("Fn::GetAtt") => {
                        Value::String(self.get_att(&getatt_path(&self.resolve(val)?)?)?)
                    }
                    Some("Fn::Sub") => Value::String(self.sub(str_of(&self.resolve(val)?)?)?),
                    _ => self.resolve_mapping(m)?,
                }
            }
            Value::Mapping(m) => self.resolve_mapping(m)?,
            Value::Sequence(s) => Value::Sequence(
                s.iter()
                    .map(|v| self.resolve(v))
                    .filter(|v| !v.as_ref().is_ok_and(is_no_value))
                    .collect::<Result<_>>()?,
            ),
            other => other.clone(),
        })
    }
}

fn str_of(v: &Value) -> Result<&str> {
    v.as_str().ok_or_else(|| anyhow!("expected a string"))
}

fn getatt_path(v: &Value) -> Result<String> {
    match v {
        Value::String(s) => Ok(s.clone()),
        Value::Sequence(s) if s.len() == 2 => Ok(format!("{}.{}", str_of(&s[0])?, str_of(&s[1])?)),
        _ => bail!("bad GetAtt"),
    }
}

fn scalar(v: &Value) -> Option<String> {
    match v {
        Value::String(s) => Some(s.clone()),
        Value::Number(n) => Some(n.to_string()),
        Value::Bool(b) => Some(b.to_string()),
        _ => None,
    }
}

fn get<'a>(v: &'a Value, path: &[&str]) -> Option<&'a Value> {
    path.iter().try_fold(v, |cur, k| cur.get(*k))
}

/// The template's `Conditions`, by name.
fn conditions(t: &Value) -> HashMap<String, Value> {
    t.get("Conditions")
        .and_then(Value::as_mapping)
        .map(|m| {
            m.iter()
                .filter_map(|(k, v)| Some((k.as_str()?.to_owned(), v.clone())))
                .collect()
        })
        .unwrap_or_default()
}

/// Parameters' defaults, then `overrides`.
fn parameters(t: &Value, overrides: &HashMap<String, String>) -> HashMap<String, String> {
    let mut out = HashMap::new();
    if let Some(Value::Mapping(ps)) = t.get("Parameters") {
        for (k, v) in ps {
            if let (Some(k), Some(d)) = (k.as_str(), v.get("Default").and_then(scalar)) {
                out.insert(k.to_owned(), d);
            }
        }
    }
    out.extend(overrides.clone());
    out
}

/// Creates the template's resources in the emulator behind `clients`.
pub async fn deploy(
    path: &Path,
    clients: &Clients,
    region: &str,
    stack: &str,
    params: &HashMap<String, String>,
) -> Result<Deployed> {
    let text =
        std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
    let t: Value = serde_yaml::from_str(&text).context("template.yaml is not YAML")?;
    let resources = t
        .get("Resources")
        .and_then(Value::as_mapping)
        .ok_or_else(|| anyhow!("template has no Resources"))?;
    let mut ctx = Ctx {
        region: region.into(),
        stack: stack.into(),
        params: parameters(&t, params),
        conditions: conditions(&t),
        ..Default::default()
    };
    let mut deployed = Deployed::default();
    // Resources whose `Condition` does not hold are not created (nor listed as not emulated).
    let mut skipped = std::collections::HashSet::new();
    for (name, r) in resources {
        if !ctx.creates(r)? {
            skipped.insert(name.as_str().unwrap_or_default().to_owned());
        }
    }
    let by_type = |ty: &str| -> Vec<(String, Value)> {
        resources
            .iter()
            .filter(|(_, r)| r.get("Type").and_then(Value::as_str) == Some(ty))
            .filter_map(|(k, r)| Some((k.as_str()?.to_owned(), r.clone())))
            .filter(|(k, _)| !skipped.contains(k))
            .collect()
    };

    // Names every resource can be referred to by, before anything needs resolving. Resources
    // the local stack does not emulate (roles, alarms, log groups) get placeholder ids.
    for (name, r) in resources {
        if let Some(name) = name.as_str() {
            let ty = r
                .get("Type")
                .and_then(Value::as_str)
                .unwrap_or_default()
                .replace("::", "-")
                .to_lowercase();
            ctx.refs.insert(name.to_owned(), name.to_owned());
            ctx.attrs.insert(
                name.to_owned(),
                [(
                    "Arn".to_owned(),
                    format!("arn:aws:local:{region}:{ACCOUNT}:{ty}/{name}"),
                )]
                .into(),
            );
        }
    }
    for (name, _) in by_type("AWS::Serverless::HttpApi") {
        ctx.refs.insert(name, "local".into());
    }

    for (name, _) in by_type("AWS::KMS::Key") {
        let key = clients
            .kms
            .create_key()
            .description(format!("{stack} {name}"))
            .send()
            .await?;
        let meta = key
            .key_metadata
            .ok_or_else(|| anyhow!("kms key without metadata"))?;
        ctx.refs.insert(name.clone(), meta.key_id.clone());
        ctx.attrs.insert(
            name,
            [("Arn".to_owned(), meta.arn.unwrap_or_default())].into(),
        );
    }

    for (name, r) in by_type("AWS::DynamoDB::Table") {
        let p = ctx.resolve(
            r.get("Properties")
                .ok_or_else(|| anyhow!("{name}: no Properties"))?,
        )?;
        create_table(clients, &name, &p)
            .await
            .with_context(|| format!("creating table {name}"))?;
        ctx.refs.insert(name.clone(), name.clone());
        ctx.attrs.insert(
            name.clone(),
            [(
                "Arn".to_owned(),
                format!("arn:aws:dynamodb:{region}:{ACCOUNT}:table/{name}"),
            )]
            .into(),
        );
    }

    // Queues: create all, then apply attributes (a redrive policy names another queue).
    let queues = by_type("AWS::SQS::Queue");
    for (name, _) in &queues {
        let url = clients
            .sqs
            .create_queue()
            .queue_name(name)
            .send()
            .await?
            .queue_url
            .unwrap_or_default();
        ctx.refs.insert(name.clone(), url);
        let arn = format!("arn:aws:sqs:{region}:{ACCOUNT}:{name}");
        ctx.attrs.insert(
            name.clone(),
            [
                ("Arn".to_owned(), arn),
                ("QueueName".to_owned(), name.clone()),
            ]
            .into(),
        );
    }
    for (name, r) in &queues {
        let p = ctx.resolve(r.get("Properties").unwrap_or(&Value::Null))?;
        let mut attrs = HashMap::new();
        for key in [
            "VisibilityTimeout",
            "MessageRetentionPeriod",
            "DelaySeconds",
            "ReceiveMessageWaitTimeSeconds",
        ] {
            if let Some(v) = p.get(key).and_then(scalar) {
                attrs.insert(key.to_owned(), v);
            }
        }
        if let Some(rp) = p.get("RedrivePolicy") {
            let target = rp
                .get("deadLetterTargetArn")
                .and_then(scalar)
                .ok_or_else(|| anyhow!("{name}: redrive without target"))?;
            let max = rp
                .get("maxReceiveCount")
                .and_then(scalar)
                .ok_or_else(|| anyhow!("{name}: redrive without maxReceiveCount"))?;
            attrs.insert(
                "RedrivePolicy".into(),
                serde_json::json!({"deadLetterTargetArn": target, "maxReceiveCount": max})
                    .to_string(),
            );
        }
        if !attrs.is_empty() {
            let mut req = clients
                .sqs
                .set_queue_attributes()
                .queue_url(ctx.reference(name)?);
            for (k, v) in attrs {
                req = req.attributes(aws_sdk_sqs::types::QueueAttributeName::from(k.as_str()), v);
            }
            req.send()
                .await
                .with_context(|| format!("queue attributes of {name}"))?;
        }
    }

    for (name, r) in by_type("AWS::Events::EventBus") {
        let p = ctx.resolve(r.get("Properties").unwrap_or(&Value::Null))?;
        let bus = p
            .get("Name")
            .and_then(scalar)
            .unwrap_or_else(|| name.clone());
        clients
            .eventbridge
            .create_event_bus()
            .name(&bus)
            .send()
            .await?;
        ctx.refs.insert(name.clone(), bus.clone());
        ctx.attrs.insert(
            name.clone(),
            [
                (
                    "Arn".to_owned(),
                    format!("arn:aws:events:{region}:{ACCOUNT}:event-bus/{bus}"),
                ),
                ("Name".to_owned(), bus),
            ]
            .into(),
        );
    }

    for (name, r) in by_type("AWS::Events::Rule") {
        let p = ctx.resolve(r.get("Properties").unwrap_or(&Value::Null))?;
        let bus = p
            .get("EventBusName")
            .and_then(scalar)
            .unwrap_or_else(|| "default".into());
        let pattern: serde_json::Value =
            serde_yaml::from_value(p.get("EventPattern").cloned().unwrap_or(Value::Null))?;
        clients
            .eventbridge
            .put_rule()
            .name(&name)
            .event_bus_name(&bus)
            .event_pattern(pattern.to_string())
            .send()
            .await?;
        let mut targets = Vec::new();
        for t in p
            .get("Targets")
            .and_then(Value::as_sequence)
            .cloned()
            .unwrap_or_default()
        {
            let id = t.get("Id").and_then(scalar).unwrap_or_else(|| "t".into());
            let arn = t
                .get("Arn")
                .and_then(scalar)
                .ok_or_else(|| anyhow!("{name}: target without Arn"))?;
            targets.push(
                aws_sdk_eventbridge::types::Target::builder()
                    .id(id)
                    .arn(arn)
                    .build()?,
            );
        }
        clients
            .eventbridge
            .put_targets()
            .rule(&name)
            .event_bus_name(&bus)
            .set_targets(Some(targets))
            .send()
            .await?;
        ctx.refs.insert(name.clone(), name.clone());
        ctx.attrs.insert(
            name.clone(),
            [(
                "Arn".to_owned(),
                format!("arn:aws:events:{region}:{ACCOUNT}:rule/{bus}/{name}"),
            )]
            .into(),
        );
    }

    // The sender identity for owner e-mail.
    if let Some(sender) = ctx.params.get("SenderEmail").cloned() {
        clients
            .sesv2()
            .create_email_identity()
            .email_identity(&sender)
            .send()
            .await
            .context("SES identity")?;
    }

    let queue_url_of = |ctx: &Ctx, arn: &str| -> Result<String> {
        let name = arn.rsplit(':').next().unwrap_or_default();
        ctx.refs
            .get(name)
            .cloned()
            .ok_or_else(|| anyhow!("no queue for {arn}"))
    };

    let globals_env = get(&t, &["Globals", "Function", "Environment", "Variables"])
        .map(|v| ctx.resolve(v))
        .transpose()?;
    for (name, r) in by_type("AWS::Serverless::Function") {
        let binary = get(&r, &["Metadata", "BuildProperties", "Binary"])
            .and_then(scalar)
            .ok_or_else(|| anyhow!("{name}: Metadata.BuildProperties.Binary names the crate"))?;
        let mut env = HashMap::new();
        for vars in [
            globals_env.clone(),
            get(&r, &["Properties", "Environment", "Variables"])
                .map(|v| ctx.resolve(v))
                .transpose()?,
        ]
        .into_iter()
        .flatten()
        {
            if let Value::Mapping(m) = vars {
                for (k, v) in m {
                    if let (Some(k), Some(v)) = (k.as_str(), scalar(&v)) {
                        env.insert(k.to_owned(), v);
                    }
                }
            }
        }
        if let Some(Value::Mapping(events)) = get(&r, &["Properties", "Events"]) {
            for (_, ev) in events {
                let ty = ev.get("Type").and_then(Value::as_str).unwrap_or_default();
                let props = ctx.resolve(ev.get("Properties").unwrap_or(&Value::Null))?;
                match ty {
                    "HttpApi" => deployed.routes.push(Route {
                        method: props
                            .get("Method")
                            .and_then(scalar)
                            .unwrap_or_else(|| "ANY".into())
                            .to_uppercase(),
                        path: props
                            .get("Path")
                            .and_then(scalar)
                            .unwrap_or_else(|| "/".into()),
                        function: name.clone(),
                    }),
                    "SQS" => {
                        let arn = props
                            .get("Queue")
                            .and_then(scalar)
                            .ok_or_else(|| anyhow!("{name}: SQS event without Queue"))?;
                        let partial = props
                            .get("FunctionResponseTypes")
                            .and_then(Value::as_sequence)
                            .is_some_and(|s| {
                                s.iter()
                                    .any(|x| x.as_str() == Some("ReportBatchItemFailures"))
                            });
                        deployed.mappings.push(Mapping {
                            function: name.clone(),
                            queue_url: queue_url_of(&ctx, &arn)?,
                            batch_size: props
                                .get("BatchSize")
                                .and_then(scalar)
                                .and_then(|b| b.parse().ok())
                                .unwrap_or(10),
                            partial_batch: partial,
                        });
                    }
                    "ScheduleV2" => deployed.function_schedules.push((
                        name.clone(),
                        props
                            .get("ScheduleExpression")
                            .and_then(scalar)
                            .unwrap_or_default(),
                    )),
                    other => {
                        bail!("{name}: event type {other} is not supported by the local stack")
                    }
                }
            }
        }
        deployed.functions.push(Function {
            name: name.clone(),
            binary,
            env,
        });
        ctx.refs.insert(name.clone(), name.clone());
    }

    for (name, r) in by_type("AWS::Scheduler::Schedule") {
        let p = ctx.resolve(r.get("Properties").unwrap_or(&Value::Null))?;
        let arn = get(&p, &["Target", "Arn"])
            .and_then(scalar)
            .ok_or_else(|| anyhow!("{name}: no Target.Arn"))?;
        deployed.schedules.push(Schedule {
            name: name.clone(),
            expression: p
                .get("ScheduleExpression")
                .and_then(scalar)
                .unwrap_or_default(),
            queue_url: queue_url_of(&ctx, &arn)?,
            input: get(&p, &["Target", "Input"])
                .and_then(scalar)
                .unwrap_or_else(|| "{}".into()),
        });
    }

    let emulated = [
        "AWS::KMS::Key",
        "AWS::DynamoDB::Table",
        "AWS::SQS::Queue",
        "AWS::Events::EventBus",
        "AWS::Events::Rule",
        "AWS::Serverless::Function",
        "AWS::Serverless::HttpApi",
        "AWS::Scheduler::Schedule",
    ];
    for (name, r) in resources {
        let ty = r.get("Type").and_then(Value::as_str).unwrap_or_default();
        if !emulated.contains(&ty) && !skipped.contains(name.as_str().unwrap_or_default()) {
            deployed
                .not_emulated
                .push(format!("{} ({ty})", name.as_str().unwrap_or_default()));
        }
    }
    if let Some(Value::Mapping(outs)) = t.get("Outputs") {
        for (k, o) in outs {
            if let (Some(k), Some(v)) = (k.as_str(), o.get("Value")) {
                // Outputs naming resources the local stack does not emulate stay unresolved.
                if let Ok(v) = ctx.resolve(v)
                    && let Some(s) = scalar(&v)
                {
                    deployed.outputs.insert(k.to_owned(), s);
                }
            }
        }
    }
    deployed.refs = ctx.refs.into_iter().collect();
    Ok(deployed)
}

async fn create_table(clients: &Clients, name: &str, p: &Value) -> Result<()> {
    let key_schema = |v: &Value| -> Result<Vec<KeySchemaElement>> {
        v.as_sequence()
            .ok_or_else(|| anyhow!("KeySchema"))?
            .iter()
            .map(|k| {
                Ok(KeySchemaElement::builder()
                    .attribute_name(k.get("AttributeName").and_then(scalar).unwrap_or_default())
                    .key_type(KeyType::from(
                        k.get("KeyType")
                            .and_then(scalar)
                            .unwrap_or_default()
                            .as_str(),
                    ))
                    .build()?)
            })
            .collect()
    };
    let mut req = clients
        .dynamodb
        .create_table()
        .table_name(name)
        .billing_mode(BillingMode::PayPerRequest);
    for a in p
        .get("AttributeDefinitions")
        .and_then(Value::as_sequence)
        .cloned()
        .unwrap_or_default()
    {
        req = req.attribute_definitions(
            AttributeDefinition::builder()
                .attribute_name(a.get("AttributeName").and_then(scalar).unwrap_or_default())
                .attribute_type(ScalarAttributeType::from(
                    a.get("AttributeType")
                        .and_then(scalar)
                        .unwrap_or_default()
                        .as_str(),
                ))
                .build()?,
        );
    }
    req = req.set_key_schema(Some(key_schema(
        p.get("KeySchema").ok_or_else(|| anyhow!("no KeySchema"))?,
    )?));
    for g in p
        .get("GlobalSecondaryIndexes")
        .and_then(Value::as_sequence)
        .cloned()
        .unwrap_or_default()
    {
        let proj = g.get("Projection").cloned().unwrap_or(Value::Null);
        let mut projection = Projection::builder().projection_type(ProjectionType::from(
            proj.get("ProjectionType")
                .and_then(scalar)
                .unwrap_or_else(|| "ALL".into())
                .as_str(),
        ));
        for nk in proj
            .get("NonKeyAttributes")
            .and_then(Value::as_sequence)
            .cloned()
            .unwrap_or_default()
        {
            projection = projection.non_key_attributes(scalar(&nk).unwrap_or_default());
        }
        req = req.global_secondary_indexes(
            GlobalSecondaryIndex::builder()
                .index_name(g.get("IndexName").and_then(scalar).unwrap_or_default())
                .set_key_schema(Some(key_schema(
                    g.get("KeySchema")
                        .ok_or_else(|| anyhow!("GSI without KeySchema"))?,
                )?))
                .projection(projection.build())
                .build()?,
        );
    }
    req.send().await?;
    if let Some(ttl) = p.get("TimeToLiveSpecification")
        && let Some(attr) = ttl.get("AttributeName").and_then(scalar)
    {
        clients
            .dynamodb
            .update_time_to_live()
            .table_name(name)
            .time_to_live_specification(
                TimeToLiveSpecification::builder()
                    .attribute_name(attr)
                    .enabled(true)
                    .build()?,
            )
            .send()
            .await?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ctx_for(template: &Value, overrides: &[(&str, &str)]) -> Ctx {
        let overrides = overrides
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect();
        let mut ctx = Ctx {
            region: "us-east-1".into(),
            stack: "t".into(),
            params: parameters(template, &overrides),
            conditions: conditions(template),
            ..Default::default()
        };
        if let Some(Value::Mapping(rs)) = template.get("Resources") {
            for k in rs.keys().filter_map(Value::as_str) {
                ctx.refs.insert(k.to_owned(), k.to_owned());
                ctx.attrs.insert(
                    k.to_owned(),
                    [("Arn".to_owned(), format!("arn:{k}"))].into(),
                );
            }
        }
        ctx
    }

    fn template() -> Value {
        let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../template.yaml");
        serde_yaml::from_str(&std::fs::read_to_string(path).unwrap()).unwrap()
    }

    #[test]
    fn conditions_and_if_short_and_long_forms() {
        let t: Value = serde_yaml::from_str(
            r#"
Parameters:
  Mode: {Type: String, Default: a}
Conditions:
  IsA: !Equals [!Ref Mode, a]
  IsB: {"Fn::Equals": [{"Ref": Mode}, b]}
  NotA: !Not [!Condition IsA]
  Both: !And [!Condition IsA, {"Condition": NotA}]
  Either: {"Fn::Or": [!Condition IsB, !Condition IsA]}
Resources:
  X:
    Type: AWS::SQS::Queue
    Condition: IsB
    Properties:
      Short: !If [IsA, yes, no]
      Long: {"Fn::If": [IsB, yes, no]}
      Gone: !If [IsA, !Ref AWS::NoValue, kept]
      GoneLong: {"Fn::If": [IsA, {"Ref": "AWS::NoValue"}, kept]}
      List: [one, !If [IsA, !Ref AWS::NoValue, two]]
"#,
        )
        .unwrap();
        let ctx = ctx_for(&t, &[]);
        assert!(ctx.condition("IsA").unwrap());
        assert!(!ctx.condition("IsB").unwrap());
        assert!(!ctx.condition("NotA").unwrap());
        assert!(!ctx.condition("Both").unwrap());
        assert!(ctx.condition("Either").unwrap());
        assert!(!ctx.creates(&t["Resources"]["X"]).unwrap());
        let p = ctx.resolve(&t["Resources"]["X"]["Properties"]).unwrap();
        assert_eq!(p["Short"].as_str(), Some("yes"));
        assert_eq!(p["Long"].as_str(), Some("no"));
        assert!(p.get("Gone").is_none());
        assert!(p.get("GoneLong").is_none());
        assert_eq!(p["List"].as_sequence().unwrap().len(), 1);

        let ctx = ctx_for(&t, &[("Mode", "b")]);
        assert!(ctx.creates(&t["Resources"]["X"]).unwrap());
        let p = ctx.resolve(&t["Resources"]["X"]["Properties"]).unwrap();
        assert_eq!(p["Short"].as_str(), Some("no"));
        assert_eq!(p["Gone"].as_str(), Some("kept"));
        assert_eq!(p["List"].as_sequence().unwrap().len(), 2);
        assert!(ctx.condition("Nope").is_err());
    }

    /// The write-unit meter prices the indexes the template declares, with their projections.
    #[test]
    fn the_meter_knows_every_index() {
        let t = template();
        let table = &t["Resources"]["StateTable"]["Properties"];
        let mut declared: Vec<(String, String, bool)> = table["GlobalSecondaryIndexes"]
            .as_sequence()
            .unwrap()
            .iter()
            .map(|g| {
                let key = |ty: &str| {
                    g["KeySchema"]
                        .as_sequence()
                        .unwrap()
                        .iter()
                        .find(|k| k["KeyType"].as_str() == Some(ty))
                        .and_then(|k| k["AttributeName"].as_str())
                        .unwrap()
                        .to_owned()
                };
                let all = g["Projection"]["ProjectionType"].as_str() == Some("ALL");
                (key("HASH"), key("RANGE"), all)
            })
            .collect();
        let mut metered: Vec<(String, String, bool)> = pil_aws::meter::INDEXES
            .iter()
            .map(|i| (i.pk.to_owned(), i.sk.to_owned(), i.projects_all))
            .collect();
        declared.sort();
        metered.sort();
        assert_eq!(declared, metered);
    }

    /// The state table in both capacity modes, as the template says.
    #[test]
    fn table_capacity_modes() {
        let t = template();
        let table = &t["Resources"]["StateTable"]["Properties"];
        let scaling: Vec<&str> = t["Resources"]
            .as_mapping()
            .unwrap()
            .iter()
            .filter(|(_, r)| {
                r["Type"]
                    .as_str()
                    .is_some_and(|ty| ty.starts_with("AWS::ApplicationAutoScaling::"))
            })
            .filter_map(|(k, _)| k.as_str())
            .collect();
        // The table and each index, reads and writes: a target and a policy each.
        let indexes = table["GlobalSecondaryIndexes"].as_sequence().unwrap().len();
        assert_eq!(scaling.len(), 2 * 2 * (1 + indexes), "{scaling:?}");

        let on_demand = ctx_for(&t, &[]);
        let p = on_demand.resolve(table).unwrap();
        assert_eq!(p["BillingMode"].as_str(), Some("PAY_PER_REQUEST"));
        assert!(p.get("ProvisionedThroughput").is_none());
        for g in p["GlobalSecondaryIndexes"].as_sequence().unwrap() {
            assert!(g.get("ProvisionedThroughput").is_none());
        }
        for name in &scaling {
            assert!(
                !on_demand.creates(&t["Resources"][*name]).unwrap(),
                "{name}"
            );
        }

        let provisioned = ctx_for(&t, &[("TableCapacity", "provisioned")]);
        let p = provisioned.resolve(table).unwrap();
        assert_eq!(p["BillingMode"].as_str(), Some("PROVISIONED"));
        let min = t["Parameters"]["TableMinUnits"]["Default"]
            .as_u64()
            .unwrap();
        let units = |v: &Value| {
            (
                scalar(&v["ReadCapacityUnits"]),
                scalar(&v["WriteCapacityUnits"]),
            )
        };
        let want = (Some(min.to_string()), Some(min.to_string()));
        assert_eq!(units(&p["ProvisionedThroughput"]), want);
        for g in p["GlobalSecondaryIndexes"].as_sequence().unwrap() {
            assert_eq!(units(&g["ProvisionedThroughput"]), want);
        }
        let mut scaled = std::collections::BTreeSet::new();
        for name in &scaling {
            let r = &t["Resources"][*name];
            assert!(provisioned.creates(r).unwrap(), "{name}");
            let props = provisioned.resolve(&r["Properties"]).unwrap();
            if let Some(id) = props.get("ResourceId").and_then(scalar) {
                scaled.insert((id, scalar(&props["ScalableDimension"]).unwrap()));
            }
        }
        // Every index and the table, in both dimensions, exactly once.
        let mut want = std::collections::BTreeSet::new();
        for (id, kind) in std::iter::once(("table/StateTable".to_owned(), "table")).chain(
            p["GlobalSecondaryIndexes"]
                .as_sequence()
                .unwrap()
                .iter()
                .map(|g| {
                    (
                        format!(
                            "table/StateTable/index/{}",
                            g["IndexName"].as_str().unwrap()
                        ),
                        "index",
                    )
                }),
        ) {
            for dim in ["ReadCapacityUnits", "WriteCapacityUnits"] {
                want.insert((id.clone(), format!("dynamodb:{kind}:{dim}")));
            }
        }
        assert_eq!(scaled, want);
    }

    #[test]
    fn reserved_concurrency_modes() {
        let t = template();
        let functions: Vec<(&str, &Value)> = t["Resources"]
            .as_mapping()
            .unwrap()
            .iter()
            .filter(|(_, r)| r["Type"].as_str() == Some("AWS::Serverless::Function"))
            .filter_map(|(k, r)| Some((k.as_str()?, &r["Properties"])))
            .collect();
        assert_eq!(functions.len(), 5);
        // The reservation, or None where the property resolves to AWS::NoValue (dropped).
        let reservation = |ctx: &Ctx, props: &Value| {
            let v = ctx.resolve(&props["ReservedConcurrentExecutions"]).unwrap();
            (!is_no_value(&v)).then(|| v.as_u64().expect("a number of executions"))
        };
        // Default: every function reserves; 50 in all (docs/deploy.md and the parameter say so).
        let reserved = ctx_for(&t, &[]);
        let total: u64 = functions
            .iter()
            .map(|(name, p)| reservation(&reserved, p).unwrap_or_else(|| panic!("{name}")))
            .sum();
        assert_eq!(total, 50);
        // unreserved: the property is gone from every function.
        let unreserved = ctx_for(&t, &[("ReservedConcurrency", "unreserved")]);
        for (name, p) in &functions {
            assert_eq!(reservation(&unreserved, p), None, "{name}");
        }
    }
}
