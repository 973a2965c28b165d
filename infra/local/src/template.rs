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

    /// Resolves intrinsics (short and long form) to plain values.
    fn resolve(&self, v: &Value) -> Result<Value> {
        Ok(match v {
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
                    Some("Ref") => Value::String(self.reference(str_of(&self.resolve(val)?)?)?),
                    Some("Fn::GetAtt") => {
                        Value::String(self.get_att(&getatt_path(&self.resolve(val)?)?)?)
                    }
                    Some("Fn::Sub") => Value::String(self.sub(str_of(&self.resolve(val)?)?)?),
                    _ => Value::Mapping(
                        m.iter()
                            .map(|(k, v)| Ok((k.clone(), self.resolve(v)?)))
                            .collect::<Result<_>>()?,
                    ),
                }
            }
            Value::Mapping(m) => Value::Mapping(
                m.iter()
                    .map(|(k, v)| Ok((k.clone(), self.resolve(v)?)))
                    .collect::<Result<_>>()?,
            ),
            Value::Sequence(s) => {
                Value::Sequence(s.iter().map(|v| self.resolve(v)).collect::<Result<_>>()?)
            }
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
        ..Default::default()
    };
    let mut deployed = Deployed::default();
    let by_type = |ty: &str| -> Vec<(String, Value)> {
        resources
            .iter()
            .filter(|(_, r)| r.get("Type").and_then(Value::as_str) == Some(ty))
            .filter_map(|(k, r)| Some((k.as_str()?.to_owned(), r.clone())))
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
        if !emulated.contains(&ty) {
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
