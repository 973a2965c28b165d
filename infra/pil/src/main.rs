//! `pil`: the admin CLI. Works on whatever stack its environment names: source
//! `target/local/stack.env` for the local stack, or pass `--stack-name` (or set
//! `PIL_STACK_NAME`) with real credentials for a deployed stack. `pil ref …` is the
//! exception: it makes refs on the practice's side, purely locally (no stack, no AWS).

mod conformance;
mod import;
mod ops;

use std::io::{BufRead, IsTerminal, Write};
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::{Context, Result, anyhow};
use clap::{Args, Parser, Subcommand};
use jiff::civil::Date;
use pil_aws::{Adapters, Clients, Config, Meter};
use shared::action::ActionKind;
use shared::ids::PracticeId;
use shared::ports::{AuditLog, PracticeRepo};
use shared::practice::{ConfigError, Mode, SecretKind, TriggerUrl};
use shared::refkey::{RefKey, RefPrefix};
use shared::service::admin::{self, KindChange, NewPractice};
use shared::service::approval::ApprovalError;
use shared::service::{report, settings};
use shared::treatment::Treatment;

#[derive(Parser, Debug)]
#[command(
    name = "pil",
    about = "Admin CLI for the Practice Intelligence Layer",
    long_about = "Admin CLI for the Practice Intelligence Layer.\n\nIt finds the stack from its environment: `source target/local/stack.env` for the local stack \
                  (`make serve`), or `--stack-name NAME` with AWS credentials for a deployed stack (`pil ref` needs neither). Output is JSON on stdout; errors go to stderr."
)]
struct Cli {
    /// A deployed stack's name: its Outputs (table, key, bus, queues) configure the CLI. Uses
    /// the usual AWS credentials and region. Without it, the environment must name them
    /// (`source target/local/stack.env`).
    #[arg(long, env = "PIL_STACK_NAME", global = true)]
    stack_name: Option<String>,
    #[command(subcommand)]
    cmd: Cmd,
}

/// Template Output → the variable the handlers' configuration uses.
const OUTPUT_VARS: &[(&str, &str)] = &[
    ("StateTableName", "TABLE_NAME"),
    ("DataKeyId", "KMS_KEY_ID"),
    ("EventBusName", "EVENT_BUS_NAME"),
    ("CandidatesQueueUrl", "CANDIDATES_QUEUE_URL"),
    ("ScanQueueUrl", "SCAN_QUEUE_URL"),
    ("TriggersQueueUrl", "TRIGGERS_QUEUE_URL"),
    ("TriggersDLQUrl", "TRIGGERS_DLQ_URL"),
    ("ScanDLQUrl", "SCAN_DLQ_URL"),
    ("CandidatesDLQUrl", "CANDIDATES_DLQ_URL"),
    ("EventsDLQUrl", "EVENTS_DLQ_URL"),
    ("ApiUrl", "PUBLIC_BASE_URL"),
    ("SenderEmail", "SENDER_EMAIL"),
];

/// The configuration: the environment, plus the stack's Outputs when `--stack-name` is given.
async fn config(stack_name: Option<&str>) -> Result<Config> {
    let mut vars: std::collections::HashMap<String, String> = std::env::vars().collect();
    if let Some(name) = stack_name {
        // A deployed stack: the local stack's switch (left in the shell by a sourced
        // stack.env) does not apply; its trigger URLs are https to public hosts only.
        vars.remove("PIL_ALLOW_LOOPBACK_HTTP");
        let sdk = pil_aws::chain_sdk_config().await;
        let out = aws_sdk_cloudformation::Client::new(&sdk)
            .describe_stacks()
            .stack_name(name)
            .send()
            .await
            .with_context(|| format!("reading stack {name} (credentials and region set?)"))?;
        let stack = out
            .stacks()
            .first()
            .ok_or_else(|| anyhow!("stack {name} not found"))?;
        for o in stack.outputs() {
            if let (Some(k), Some(v)) = (o.output_key(), o.output_value())
                && let Some((_, var)) = OUTPUT_VARS.iter().find(|(out, _)| *out == k)
            {
                vars.insert((*var).to_owned(), v.to_owned());
            }
        }
    }
    Ok(Config::from_map(vars))
}

#[derive(Subcommand, Debug)]
enum Cmd {
    /// Onboard and inspect practices.
    #[command(subcommand)]
    Practice(PracticeCmd),
    /// Show or change a practice's approval policy.
    #[command(subcommand)]
    Policy(PolicyCmd),
    /// Run a practice's nightly scan now, as if on DATE (default: today in the practice's time zone).
    Scan {
        #[arg(long)]
        practice_id: String,
        #[arg(long, value_name = "YYYY-MM-DD")]
        date: Option<String>,
    },
    /// Per action kind: proposed, approved, auto-approved, rejected, expired, suppressed (by
    /// reason), delivered, converted, recovered revenue and conversion rate, for the actions
    /// created on the practice-local days FROM..=TO. A table, or JSON with --json.
    Report(ReportArgs),
    /// The practice's tamper-evident audit trail.
    #[command(subcommand)]
    Audit(AuditCmd),
    /// Rotate a practice's webhook or trigger secret or its link key without downtime; reseal
    /// secrets written before they were bound to their practice and purpose.
    #[command(subcommand)]
    Secret(SecretCmd),
    /// Make refs from the PMS's own ids, the recommended way (docs/contracts.md, "Refs"). For
    /// the practice's side: purely local, needs no stack and no AWS.
    #[command(subcommand)]
    Ref(RefCmd),
    /// Each practice's health (last scan, actions by status, trigger endpoint, refusals in the
    /// last 24 hours by rule), the queues' depths, and on the local stack the metrics of the
    /// last 24 hours. Text, or JSON with --json.
    Status(StatusArgs),
    /// Dead-lettered messages: show them (ids and kinds, never bodies), or send them back to
    /// their queues (every consumer has one effect per message, so nothing applies twice).
    #[command(subcommand)]
    Dlq(DlqCmd),
    /// For a PMS team: check a trigger endpoint against the trigger contract with signed test
    /// triggers (valid, repeated, badly signed, unsigned, stale, two signatures during a
    /// rotation, answered in time), and print a card of what passed. Exit code 1 if anything
    /// failed. Needs no stack: the endpoint and the practice's trigger secret (--secret-file or
    /// PIL_TRIGGER_SECRET). The test triggers name a patient ref no practice has.
    Conformance(ConformanceArgs),
    /// Send a practice's history through the events API: NDJSON (one event per line, as the
    /// API takes them) from --file or stdin, in signed batches of up to 100, progress on
    /// stderr. Creates state only; safe to run again (nothing is applied twice). The webhook
    /// secret comes from --secret-file or PIL_WEBHOOK_SECRET, never the command line.
    Import(ImportArgs),
}

#[derive(Args, Debug)]
struct ConformanceArgs {
    /// The trigger endpoint (the URL the practice gives for `--trigger-url`).
    #[arg(long)]
    url: String,
    /// The practice the test triggers are for (as in the real triggers' `practice_id`).
    #[arg(long)]
    practice_id: String,
    /// A file holding the practice's trigger secret (`whsec_…`); else PIL_TRIGGER_SECRET.
    #[arg(long)]
    secret_file: Option<PathBuf>,
    /// How long the layer waits for an answer.
    #[arg(long, default_value_t = 10)]
    timeout_seconds: u64,
    /// The patient ref the test triggers name: a test patient the endpoint knows (for
    /// example a test customer's ref at a Square relay, which answers 404 for a ref it never
    /// sent). Default: a fresh `p_conformance_…` ref no practice has.
    #[arg(long)]
    patient_ref: Option<String>,
    /// Print JSON instead of the card.
    #[arg(long)]
    json: bool,
}

#[derive(Args, Debug)]
struct StatusArgs {
    /// One practice (default: all).
    #[arg(long)]
    practice_id: Option<String>,
    /// Print JSON instead of text.
    #[arg(long)]
    json: bool,
}

#[derive(Subcommand, Debug)]
enum DlqCmd {
    /// The dead letters of a queue (left where they are).
    Show {
        /// scan, candidates, triggers or events.
        #[arg(long)]
        queue: String,
        /// At most this many.
        #[arg(long, default_value_t = 100)]
        max: usize,
    },
    /// Send a queue's dead letters back to where they came from, then delete them from the DLQ.
    Redrive {
        /// scan, candidates, triggers or events.
        #[arg(long)]
        queue: String,
        /// At most this many.
        #[arg(long, default_value_t = 100)]
        max: usize,
        /// For triggers: approve a failed, unexpired action again (attempts reset, audited)
        /// before its message goes back, once the cause is fixed (a new endpoint, the PMS up).
        #[arg(long)]
        retry_failed: bool,
    },
}

#[derive(Args, Debug)]
struct ImportArgs {
    #[arg(long)]
    practice_id: String,
    /// The history, one event per line (default: stdin).
    #[arg(long)]
    file: Option<PathBuf>,
    /// A file holding the practice's webhook secret (`whsec_…`); else PIL_WEBHOOK_SECRET.
    #[arg(long)]
    secret_file: Option<PathBuf>,
    /// Events per delivery (1-100).
    #[arg(long, default_value_t = import::MAX_BATCH)]
    batch_size: usize,
    /// The API's base URL (default: PUBLIC_BASE_URL from stack.env or the stack's outputs).
    #[arg(long)]
    api_url: Option<String>,
}

#[derive(Subcommand, Debug)]
enum RefCmd {
    /// Print a new random ref key (32 bytes as base64url). It is the practice's secret: the
    /// practice keeps it; the layer never needs it.
    Key,
    /// Print the ref of each PMS id: one per line, or JSON with --json. The key comes from
    /// --key-file or the environment variable PIL_REF_KEY, never from the command line.
    Derive(RefDeriveArgs),
}

#[derive(Args, Debug)]
struct RefDeriveArgs {
    /// A file holding the ref key, as `pil ref key` printed it. Without it, the key is read
    /// from the environment variable PIL_REF_KEY.
    #[arg(long, value_name = "PATH")]
    key_file: Option<PathBuf>,
    /// Letters written before an `_` in every ref: 1-8 of a-z (e.g. p for patients, a for
    /// appointments).
    #[arg(long)]
    prefix: Option<String>,
    /// Print a JSON array of {"pms_id", "ref"} (it pairs PMS ids with refs: it stays with
    /// the practice).
    #[arg(long)]
    json: bool,
    /// PMS ids, exactly as the PMS writes them (no trimming, no case folding). None: one id
    /// per line from stdin, each ref printed as its line is read.
    #[arg(value_name = "PMS_ID")]
    pms_ids: Vec<String>,
}

/// The variable `pil ref derive` reads the key from (never a flag: it would show in `ps`).
const REF_KEY_VAR: &str = "PIL_REF_KEY";

/// The ref key from `--key-file` or `PIL_REF_KEY` (exactly one of them). Errors name where
/// the key came from and the rule, never the key.
fn ref_key(key_file: Option<&Path>) -> Result<RefKey> {
    let var = std::env::var_os(REF_KEY_VAR).filter(|v| !v.is_empty());
    let (source, bytes) = match (key_file, var) {
        (Some(_), Some(_)) => {
            return Err(anyhow!(
                "--key-file: {REF_KEY_VAR} is set too; give the key one way (unset {REF_KEY_VAR} or drop --key-file)"
            ));
        }
        (Some(path), None) => (
            "--key-file",
            std::fs::read(path)
                .with_context(|| format!("--key-file: reading {}", path.display()))?,
        ),
        (None, Some(v)) => (REF_KEY_VAR, v.into_encoded_bytes()),
        (None, None) => {
            return Err(anyhow!(
                "no ref key: pass --key-file PATH or set {REF_KEY_VAR} (never the key itself on the command line); `pil ref key` makes one"
            ));
        }
    };
    let text = String::from_utf8(bytes)
        .map_err(|_| anyhow!("{source}: the ref key is not base64url (or base64) text"))?;
    RefKey::parse(&text).map_err(|e| anyhow!("{source}: the ref key is {e}"))
}

/// Writes `pil ref derive`'s output as it goes: a ref per line, or a JSON array with one
/// `{"pms_id", "ref"}` object per line.
struct RefOut<W: Write> {
    out: W,
    json: bool,
    written: usize,
}

impl<W: Write> RefOut<W> {
    fn write(&mut self, pms_id: &str, r: &str) -> std::io::Result<()> {
        if self.json {
            let sep = if self.written == 0 { "[\n" } else { ",\n" };
            let item = serde_json::json!({"pms_id": pms_id, "ref": r});
            write!(self.out, "{sep}{item}")?;
        } else {
            writeln!(self.out, "{r}")?;
        }
        self.written += 1;
        Ok(())
    }

    fn finish(mut self) -> std::io::Result<()> {
        if self.json {
            let open = if self.written == 0 { "[" } else { "" };
            writeln!(self.out, "{open}\n]")?;
        }
        self.out.flush()
    }
}

/// `pil ref …`. Prints its own output, as it goes (a backfill streams through stdin).
fn refs(cmd: RefCmd) -> Result<()> {
    match cmd {
        RefCmd::Key => {
            let key = RefKey::generate().expose();
            eprintln!(
                "pil: this ref key is a secret for the practice to keep (e.g. in its password manager); the layer never needs it: never send it"
            );
            writeln!(std::io::stdout().lock(), "{key}")?;
            Ok(())
        }
        RefCmd::Derive(a) => {
            let prefix = a
                .prefix
                .as_deref()
                .map(|p| RefPrefix::parse(p).map_err(|e| anyhow!("--prefix: {}", e.rule)))
                .transpose()?;
            let key = ref_key(a.key_file.as_deref())?;
            let mut out = RefOut {
                out: std::io::stdout().lock(),
                json: a.json,
                written: 0,
            };
            let derived = if a.pms_ids.is_empty() {
                derive_stdin(&key, prefix.as_ref(), &mut out)
            } else {
                a.pms_ids.iter().enumerate().try_for_each(|(i, id)| {
                    if id.is_empty() {
                        return Err(anyhow!("PMS_ID {}: empty", i + 1));
                    }
                    Ok(out.write(id, key.derive(prefix.as_ref(), id).as_str())?)
                })
            };
            let finished = derived.and_then(|()| Ok(out.finish()?));
            match finished {
                // The reader went away (`… | head`): nothing more to say.
                Err(e)
                    if e.downcast_ref::<std::io::Error>()
                        .is_some_and(|e| e.kind() == std::io::ErrorKind::BrokenPipe) =>
                {
                    Ok(())
                }
                other => other,
            }
        }
    }
}

/// One PMS id per line of stdin (LF line ends; the id is the whole line), each ref written as
/// its line is read.
fn derive_stdin<W: Write>(
    key: &RefKey,
    prefix: Option<&RefPrefix>,
    out: &mut RefOut<W>,
) -> Result<()> {
    let stdin = std::io::stdin();
    if stdin.is_terminal() {
        eprintln!("pil: reading PMS ids from stdin, one per line (end with Ctrl-D)");
    }
    let mut input = stdin.lock();
    let mut line = Vec::new();
    for n in 1.. {
        line.clear();
        if input
            .read_until(b'\n', &mut line)
            .context("reading stdin")?
            == 0
        {
            break;
        }
        if line.last() == Some(&b'\n') {
            line.pop();
        }
        if line.last() == Some(&b'\r') {
            return Err(anyhow!(
                "stdin line {n}: ends in a carriage return (CRLF line ends): convert the input to LF line ends (ids are used exactly as given)"
            ));
        }
        let id =
            std::str::from_utf8(&line).map_err(|_| anyhow!("stdin line {n}: not UTF-8 text"))?;
        if id.is_empty() {
            return Err(anyhow!("stdin line {n}: empty (one PMS id per line)"));
        }
        out.write(id, key.derive(prefix, id).as_str())?;
        // A relay may read each ref before writing its next id.
        out.out.flush()?;
    }
    Ok(())
}

#[derive(Subcommand, Debug)]
enum SecretCmd {
    /// Replace a secret with a fresh one; the old one keeps working for the overlap (default
    /// 72 h). Prints the new secret once (stored KMS-encrypted, never shown again; a link key
    /// is never shown) and `old_valid_until`.
    Rotate {
        #[arg(long)]
        practice_id: String,
        /// webhook: the PMS signs events with it (the old one is accepted until the overlap
        /// ends); trigger: we sign triggers with it (each trigger carries a signature with the
        /// new and the old one until the overlap ends); link: approval and settings links are
        /// signed with it (links signed with the old one work until the overlap ends; with 0,
        /// every outstanding link stops at once).
        #[arg(long, value_enum)]
        which: Which,
        /// Hours the old secret keeps working (0-720; 0: stops at once).
        #[arg(long, default_value_t = admin::DEFAULT_OVERLAP_HOURS)]
        overlap_hours: u32,
        /// Rotate even though the last rotation's overlap is still running (the secret it
        /// replaced stops working at once).
        #[arg(long)]
        force: bool,
    },
    /// Seal again, each under its practice and purpose (the KMS encryption context), the
    /// secrets of practices onboarded before secrets were bound to one. The secrets do not
    /// change: nothing to give the PMS. Values bound already are left alone, so it is safe to
    /// run again. Run it right after deploying a version that binds secrets.
    Reseal {
        /// One practice; or --all.
        #[arg(long, required_unless_present = "all", conflicts_with = "all")]
        practice_id: Option<String>,
        /// Every practice.
        #[arg(long)]
        all: bool,
    },
}

#[derive(clap::ValueEnum, Clone, Copy, Debug)]
enum Which {
    Webhook,
    Trigger,
    Link,
}

impl From<Which> for SecretKind {
    fn from(w: Which) -> Self {
        match w {
            Which::Webhook => Self::Webhook,
            Which::Trigger => Self::Trigger,
            Which::Link => Self::Link,
        }
    }
}

/// What to tell the operator to do next (the new secret goes to the PMS side).
fn rotation_next_step(which: SecretKind, until: jiff::Timestamp, overlap: u32) -> String {
    match (which, overlap) {
        (SecretKind::Webhook, 0) => "Give the new secret to the PMS integrator now: events signed with the old one are refused from now on.".into(),
        (SecretKind::Webhook, _) => format!("Give the new secret to the PMS integrator over a secure channel; the PMS must sign with it before {until}. Until then events signed with either secret are accepted; after that the old one is refused."),
        (SecretKind::Trigger, 0) => "Give the new secret to the PMS integrator now: triggers are signed with it only, from now on.".into(),
        (SecretKind::Trigger, _) => format!("Give the new secret to the PMS integrator over a secure channel; the PMS must verify with it before {until}. Until then every trigger carries two signatures (new and old secret), either verifies; after that only the new one."),
        (SecretKind::Link, 0) => "Nothing to hand over. Every approval and settings link sent before now stopped working; the next digest carries new ones, and `pil practice settings-link` e-mails the owners a new settings link.".into(),
        (SecretKind::Link, _) => format!("Nothing to hand over. Approval and settings links sent before now work until {until} (or their own expiry, if sooner); new links are signed with the new key."),
        (SecretKind::Tombstone, _) => "The tombstone key is never rotated.".into(),
    }
}

fn rotate_err(e: admin::RotateError, pid: &PracticeId) -> anyhow::Error {
    use shared::ports::StoreError;
    match e {
        admin::RotateError::Admin(admin::AdminError::NotFound(_)) => {
            anyhow!("practice {pid} not found: check --practice-id (nothing was changed)")
        }
        admin::RotateError::Admin(admin::AdminError::Invalid { field, rule }) => {
            anyhow!("--{}: {rule}", field.replace('_', "-"))
        }
        admin::RotateError::Admin(admin::AdminError::Keys(e)) => anyhow!(
            "the key service could not seal the new secret ({e}); nothing was changed: check access to the stack's KMS key (KMS_KEY_ID) and run the command again"
        ),
        admin::RotateError::Admin(admin::AdminError::Store(StoreError::Conflict)) => anyhow!(
            "the practice kept changing while rotating (5 tries); nothing was rotated: run the command again"
        ),
        admin::RotateError::Admin(admin::AdminError::Store(e)) => anyhow!(
            "storage: {e}; the rotation may not have been written: check `pil audit show --practice-id {pid}` for a new secret_rotated record, and if there is none run the command again"
        ),
        e => anyhow!(e),
    }
}

#[derive(Subcommand, Debug)]
enum AuditCmd {
    /// Walk the hash chain; exits non-zero naming the first changed, removed or reordered
    /// record.
    Verify {
        #[arg(long)]
        practice_id: String,
    },
    /// Print the records (JSON, oldest first).
    Show {
        #[arg(long)]
        practice_id: String,
    },
}

#[derive(Args, Debug)]
struct ReportArgs {
    #[arg(long)]
    practice_id: String,
    /// First practice-local day (inclusive).
    #[arg(
        long,
        value_name = "YYYY-MM-DD",
        required_unless_present = "integration"
    )]
    from: Option<String>,
    /// Last practice-local day (inclusive).
    #[arg(
        long,
        value_name = "YYYY-MM-DD",
        required_unless_present = "integration"
    )]
    to: Option<String>,
    /// The PMS integration report instead: the practice's refused signed deliveries by rule
    /// and field path (never a value), over the last --hours.
    #[arg(long, conflicts_with_all = ["from", "to"])]
    integration: bool,
    /// With --integration: how far back (1-840, the counts are kept 35 days).
    #[arg(long, default_value_t = 24, value_parser = clap::value_parser!(u32).range(1..=840))]
    hours: u32,
    /// Print JSON instead of the table.
    #[arg(long)]
    json: bool,
}

#[derive(Subcommand, Debug)]
enum PracticeCmd {
    /// Onboard a practice with the default policy (everything needs approval). Prints its
    /// secrets once; they are stored encrypted and never shown again.
    Create {
        #[arg(long)]
        practice_id: String,
        /// IANA time zone, e.g. America/New_York.
        #[arg(long)]
        time_zone: String,
        /// The owner's address for approval e-mails (repeat for several).
        #[arg(long = "owner-email", required = true)]
        owner_emails: Vec<String>,
        /// Where triggers are POSTed: https to a host name or a public IP address (private,
        /// loopback, link-local and other special addresses are refused; http to loopback only
        /// on the local stack).
        #[arg(long)]
        trigger_url: String,
    },
    /// Show a practice's configuration (secrets stay sealed).
    Show {
        #[arg(long)]
        practice_id: String,
    },
    /// Change a practice's settings and per-treatment overrides; unspecified ones stay.
    Update(PracticeUpdateArgs),
    /// Stop scanning and sending for a practice (inbound events are still accepted).
    Disable {
        #[arg(long)]
        practice_id: String,
    },
    /// Resume a disabled practice.
    Enable {
        #[arg(long)]
        practice_id: String,
    },
    /// E-mail each owner a settings link of their own (it works for 30 minutes, once). The
    /// link is never printed: settings links only go to the owners' inboxes.
    SettingsLink {
        #[arg(long)]
        practice_id: String,
    },
}

#[derive(Args, Debug)]
struct PracticeUpdateArgs {
    #[arg(long)]
    practice_id: String,
    /// IANA time zone, e.g. America/Chicago.
    #[arg(long)]
    time_zone: Option<String>,
    /// Replaces the owner addresses (repeat for several).
    #[arg(long = "owner-email")]
    owner_emails: Vec<String>,
    /// Replaces the technical contacts who get the daily PMS integration report on days
    /// with refused deliveries (repeat for several).
    #[arg(long = "technical-contact", conflicts_with = "no_technical_contacts")]
    technical_contacts: Vec<String>,
    /// Nobody gets the integration report.
    #[arg(long)]
    no_technical_contacts: bool,
    /// A new trigger URL (the rules of `practice create`); also re-enables an endpoint the PMS
    /// retired with 410.
    #[arg(long)]
    trigger_url: Option<String>,
    /// Rebook cycle override, TREATMENT=DAYS (or TREATMENT=default); repeat per treatment.
    #[arg(long = "cycle-days", value_name = "TREATMENT=DAYS")]
    cycle_days: Vec<String>,
    /// Average ticket for value estimates, TREATMENT=AMOUNT (or TREATMENT=default).
    #[arg(long = "avg-ticket", value_name = "TREATMENT=AMOUNT")]
    avg_ticket: Vec<String>,
    /// Follow-up interval override, TREATMENT=DAYS (or TREATMENT=default).
    #[arg(long = "follow-up-days", value_name = "TREATMENT=DAYS")]
    follow_up_days: Vec<String>,
    /// How long a gap stays actionable past its due date, KIND=DAYS (1-730, or KIND=default);
    /// repeat per kind. Defaults: follow_up 7, no_show_recovery 12, win_back 180.
    #[arg(long = "stale-after-days", value_name = "KIND=DAYS")]
    stale_after_days: Vec<String>,
    /// Win-back after this many cycles without a visit (2-10, or `default`).
    #[arg(long)]
    win_back_multiple: Option<String>,
}

/// `TREATMENT=N` or `TREATMENT=default`, for `--flag`.
fn overrides(flag: &str, vals: &[String]) -> Result<Vec<(Treatment, Option<u32>)>> {
    vals.iter()
        .map(|v| {
            let bad = || {
                anyhow!(
                    "--{flag}: TREATMENT=NUMBER or TREATMENT=default, TREATMENT one of {}",
                    Treatment::ALL
                        .iter()
                        .map(|t| t.as_str())
                        .collect::<Vec<_>>()
                        .join(", ")
                )
            };
            let (t, n) = v.split_once('=').ok_or_else(bad)?;
            let t = Treatment::parse(t.trim()).ok_or_else(bad)?;
            let n = match n.trim() {
                "default" => None,
                n => Some(n.parse::<u32>().map_err(|_| bad())?),
            };
            Ok((t, n))
        })
        .collect()
}

/// `KIND=N` or `KIND=default`, for `--flag`.
fn kind_overrides(flag: &str, vals: &[String]) -> Result<Vec<(ActionKind, Option<u32>)>> {
    vals.iter()
        .map(|v| {
            let bad = || {
                anyhow!(
                    "--{flag}: KIND=NUMBER or KIND=default, KIND one of follow_up, no_show_recovery, win_back, rebook_nudge, series_continue"
                )
            };
            let (k, n) = v.split_once('=').ok_or_else(bad)?;
            let k = ActionKind::parse(k.trim()).ok_or_else(bad)?;
            let n = match n.trim() {
                "default" => None,
                n => Some(n.parse::<u32>().map_err(|_| bad())?),
            };
            Ok((k, n))
        })
        .collect()
}

fn practice_json(p: &shared::practice::Practice) -> serde_json::Value {
    serde_json::json!({
        "practice_id": p.id, "time_zone": p.time_zone, "owner_emails": p.owner_emails, "technical_contacts": p.technical_contacts, "trigger_url": p.trigger_url,
        "disabled": p.disabled, "endpoint_retired": p.endpoint_retired, "last_scan_date": p.last_scan_date,
        "webhook_secrets": p.secrets.webhook.len(), "webhook_previous_until": p.secrets.webhook_previous_until,
        "trigger_previous_until": p.secrets.trigger_previous.as_ref().map(|t| t.until),
        "link_previous_until": p.secrets.link_previous.as_ref().map(|t| t.until), "policy": p.policy, "cycle_days": p.cycle_days,
        "avg_ticket": p.avg_ticket, "follow_up_days": p.follow_up_days, "stale_after_days": p.stale_after_days, "win_back_multiple": p.win_back_multiple,
    })
}

fn admin_err(e: admin::AdminError) -> anyhow::Error {
    match e {
        admin::AdminError::Invalid { field, rule } => {
            anyhow!("--{}: {rule}", field.replace('_', "-"))
        }
        e => e.into(),
    }
}

#[derive(Subcommand, Debug)]
enum PolicyCmd {
    /// Print the policy as JSON.
    Show {
        #[arg(long)]
        practice_id: String,
    },
    /// Change the policy: one kind's settings (with --kind) and practice-wide ones; unspecified
    /// settings stay as they are. Audited.
    Set(PolicySet),
}

#[derive(Args, Debug)]
struct PolicySet {
    #[arg(long)]
    practice_id: String,
    /// rebook_nudge, slot_offer, follow_up, no_show_recovery, win_back, series_continue
    /// (needed with --mode, --max-auto-per-day or --max-auto-value)
    #[arg(long)]
    kind: Option<String>,
    /// auto (sent within the limits), approve (owner approves each), off (never proposed)
    #[arg(long)]
    mode: Option<String>,
    /// Most auto-approved actions of this kind per practice-local day; more go to the owner.
    #[arg(long)]
    max_auto_per_day: Option<u32>,
    /// Largest estimated value that may be auto-approved; above it the owner decides.
    #[arg(long)]
    max_auto_value: Option<u32>,
    /// Practice-wide: days after a nudge before the same patient may be nudged again.
    #[arg(long)]
    cooldown_days: Option<u32>,
    /// Practice-wide: most nudges per patient in any 30 days.
    #[arg(long = "max-nudges-per-30-days")]
    max_nudges_per_30_days: Option<u32>,
    /// Practice-wide: local hours in which nothing is delivered, START-END (e.g. 20-8), or
    /// `none`. Triggers wait until the window ends; none is dropped.
    #[arg(long, value_name = "START-END|none")]
    quiet_hours: Option<String>,
    /// Practice-wide: hours an approval link stays valid.
    #[arg(long)]
    approval_expiry_hours: Option<u32>,
    /// Practice-wide: how many due patients an opened slot is offered to (K).
    #[arg(long)]
    slot_fill_k: Option<u32>,
    /// Practice-wide: most actions one night's scan proposes (1-500; default 25). The rest
    /// wait for later nights, highest value and most overdue first.
    #[arg(long)]
    nightly_budget: Option<u32>,
}

fn quiet_hours(s: &str) -> Result<Option<(u8, u8)>> {
    shared::practice::parse_quiet_hours(s).map_err(|()| {
        anyhow!("--quiet-hours: two different local hours 0-23 as START-END (e.g. 20-8), or none")
    })
}

#[tokio::main]
async fn main() -> ExitCode {
    let cli = match Cli::parse() {
        // Local: before anything reads the stack's configuration.
        Cli {
            cmd: Cmd::Ref(cmd), ..
        } => {
            return match refs(cmd) {
                Ok(()) => ExitCode::SUCCESS,
                Err(e) => {
                    eprintln!("pil: {e:#}");
                    ExitCode::FAILURE
                }
            };
        }
        Cli {
            cmd: Cmd::Conformance(a),
            ..
        } => {
            return match conformance_cmd(&a).await {
                Ok(true) => ExitCode::SUCCESS,
                Ok(false) => ExitCode::FAILURE,
                Err(e) => {
                    eprintln!("pil: {e:#}");
                    ExitCode::FAILURE
                }
            };
        }
        cli => cli,
    };
    match run(cli).await {
        Ok(out) => {
            #[allow(clippy::print_stdout)]
            match out {
                // A command's text output (`pil report` without --json), printed as is.
                serde_json::Value::String(text) => print!("{text}"),
                json => println!(
                    "{}",
                    serde_json::to_string_pretty(&json).unwrap_or_default()
                ),
            }
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("pil: {e:#}");
            ExitCode::FAILURE
        }
    }
}

/// `pil conformance`: prints the card; `Ok(false)` when a check failed.
async fn conformance_cmd(a: &ConformanceArgs) -> Result<bool> {
    let pid = practice_id(&a.practice_id)?;
    let env = Config::from_env();
    let url = trigger_url_arg(&a.url, &env).map_err(|e| anyhow!("--url: {e}"))?;
    let secret_text = match &a.secret_file {
        Some(p) => std::fs::read_to_string(p)
            .with_context(|| format!("--secret-file {}: cannot read it", p.display()))?,
        None => std::env::var("PIL_TRIGGER_SECRET").map_err(|_| {
            anyhow!("the trigger secret: pass --secret-file PATH or set PIL_TRIGGER_SECRET")
        })?,
    };
    let secret = shared::signature::WebhookSecret::parse(secret_text.trim())
        .map_err(|_| anyhow!("the trigger secret: not a whsec_ secret"))?;
    let timeout = std::time::Duration::from_secs(a.timeout_seconds.clamp(1, 60));
    let patient = a
        .patient_ref
        .as_deref()
        .map(|r| {
            shared::ids::OpaqueRef::parse(r)
                .map(|r| r.as_str().to_owned())
                .map_err(|_| anyhow!("--patient-ref: not a ref (docs/contracts.md, Refs)"))
        })
        .transpose()?;
    let card = conformance::run(&url, &pid, &secret, timeout, patient.as_deref()).await?;
    #[allow(clippy::print_stdout)]
    if a.json {
        println!("{}", serde_json::to_string_pretty(&card)?);
    } else {
        print!("{}", card.text());
    }
    Ok(card.passed)
}

fn practice_id(s: &str) -> Result<PracticeId> {
    PracticeId::parse(s).map_err(|e| anyhow!("--practice-id: {e}"))
}

/// `--trigger-url`, under the rules of the stack's scope (deployed: https to a public host).
/// The error names the rule, never the URL.
fn trigger_url_arg(s: &str, config: &Config) -> Result<TriggerUrl> {
    TriggerUrl::parse(s, config.trigger_url_scope())
        .map_err(|e| anyhow!("{}", ConfigError::TriggerUrl(e)))
}

async fn run(cli: Cli) -> Result<serde_json::Value> {
    let config = config(cli.stack_name.as_deref()).await?;
    if config.opt("TABLE_NAME").is_none() {
        return Err(anyhow!(
            "no stack configured: `source target/local/stack.env` (local stack) or pass --stack-name NAME (AWS)"
        ));
    }
    let clients = Clients::from_env().await;
    let adapters =
        Adapters::new(&clients, &config, Meter::default()).map_err(|e| anyhow!("{e}"))?;
    let store = &adapters.store;
    Ok(match cli.cmd {
        Cmd::Practice(PracticeCmd::Create {
            practice_id: id,
            time_zone,
            owner_emails,
            trigger_url,
        }) => {
            let input = NewPractice {
                id: practice_id(&id)?,
                time_zone,
                owner_emails,
                trigger_url: trigger_url_arg(&trigger_url, &config)?,
            };
            let out = admin::create_practice(store, adapters.secrets.keys(), input).await?;
            serde_json::to_value(out)?
        }
        Cmd::Practice(PracticeCmd::Show { practice_id: id }) => {
            let p = store
                .get_practice(&practice_id(&id)?)
                .await?
                .ok_or_else(|| anyhow!("practice {id} not found"))?;
            practice_json(&p)
        }
        Cmd::Practice(PracticeCmd::Update(u)) => {
            let pid = practice_id(&u.practice_id)?;
            let update = admin::PracticeUpdate {
                time_zone: u.time_zone,
                owner_emails: (!u.owner_emails.is_empty()).then_some(u.owner_emails),
                technical_contacts: if u.no_technical_contacts {
                    Some(Vec::new())
                } else {
                    (!u.technical_contacts.is_empty()).then_some(u.technical_contacts)
                },
                trigger_url: u
                    .trigger_url
                    .as_deref()
                    .map(|t| trigger_url_arg(t, &config))
                    .transpose()?,
                cycle_days: overrides("cycle-days", &u.cycle_days)?,
                avg_ticket: overrides("avg-ticket", &u.avg_ticket)?,
                follow_up_days: overrides("follow-up-days", &u.follow_up_days)?,
                stale_after_days: kind_overrides("stale-after-days", &u.stale_after_days)?,
                win_back_multiple: u
                    .win_back_multiple
                    .as_deref()
                    .map(|m| match m {
                        "default" => Ok(None),
                        m => m
                            .parse::<u32>()
                            .map(Some)
                            .map_err(|_| anyhow!("--win-back-multiple: a number 2-10, or default")),
                    })
                    .transpose()?,
                disabled: None,
            };
            let p = admin::update_practice(store, &pid, update, "admin")
                .await
                .map_err(admin_err)?;
            practice_json(&p)
        }
        Cmd::Practice(PracticeCmd::Disable { practice_id: id }) => {
            let update = admin::PracticeUpdate {
                disabled: Some(true),
                ..Default::default()
            };
            let p = admin::update_practice(store, &practice_id(&id)?, update, "admin")
                .await
                .map_err(admin_err)?;
            practice_json(&p)
        }
        Cmd::Practice(PracticeCmd::Enable { practice_id: id }) => {
            let update = admin::PracticeUpdate {
                disabled: Some(false),
                ..Default::default()
            };
            let p = admin::update_practice(store, &practice_id(&id)?, update, "admin")
                .await
                .map_err(admin_err)?;
            practice_json(&p)
        }
        Cmd::Practice(PracticeCmd::SettingsLink { practice_id: id }) => {
            let pid = practice_id(&id)?;
            let from = config.opt("SENDER_EMAIL").ok_or_else(|| {
                anyhow!("no SENDER_EMAIL: `source target/local/stack.env`, or a stack whose Outputs name SenderEmail")
            })?;
            let base_url = config.opt("PUBLIC_BASE_URL").ok_or_else(|| {
                anyhow!("no PUBLIC_BASE_URL: `source target/local/stack.env`, or a stack whose Outputs name ApiUrl")
            })?;
            let mailer = pil_aws::SesMailer::new(clients.sesv2(), from);
            let bus = pil_aws::EventBus::new(
                clients.eventbridge.clone(),
                config.get("EVENT_BUS_NAME").map_err(|e| anyhow!("{e}"))?,
            );
            let deps = adapters.approval_deps(&bus, &mailer, base_url);
            let sent = settings::send_links(&deps, &pid, "admin")
                .await
                .map_err(|e| match e {
                    ApprovalError::UnknownPractice => anyhow!("practice {pid} not found"),
                    e => anyhow!("{e}; check `pil audit show --practice-id {pid}` for a settings_link_sent record before running it again"),
                })?;
            serde_json::json!({"practice_id": pid, "owners_emailed": sent,
                "valid_minutes": shared::token::SETTINGS_LINK_MINUTES})
        }
        Cmd::Policy(PolicyCmd::Show { practice_id: id }) => {
            let p = store
                .get_practice(&practice_id(&id)?)
                .await?
                .ok_or_else(|| anyhow!("practice {id} not found"))?;
            serde_json::json!({"practice_id": p.id, "policy": p.policy})
        }
        Cmd::Policy(PolicyCmd::Set(s)) => {
            let kind = s
                .kind
                .as_deref()
                .map(|k| {
                    ActionKind::parse(k).ok_or_else(|| {
                        anyhow!(
                            "--kind: one of {}",
                            ActionKind::ALL
                                .iter()
                                .map(|k| k.as_str())
                                .collect::<Vec<_>>()
                                .join(", ")
                        )
                    })
                })
                .transpose()?;
            let mode = s
                .mode
                .as_deref()
                .map(|m| Mode::parse(m).ok_or_else(|| anyhow!("--mode: auto, approve or off")))
                .transpose()?;
            let change = KindChange {
                mode,
                max_auto_per_day: s.max_auto_per_day,
                max_auto_value: s.max_auto_value,
                cooldown_days: s.cooldown_days,
                max_nudges_per_30_days: s.max_nudges_per_30_days,
                quiet_hours: s.quiet_hours.as_deref().map(quiet_hours).transpose()?,
                approval_expiry_hours: s.approval_expiry_hours,
                slot_fill_k: s.slot_fill_k,
                nightly_budget: s.nightly_budget,
            };
            let pid = practice_id(&s.practice_id)?;
            let policy =
                admin::set_policy(store, &pid, kind, change)
                    .await
                    .map_err(|e| match e {
                        admin::AdminError::Invalid { field, rule } => {
                            anyhow!("--{}: {rule}", field.replace('_', "-"))
                        }
                        e => e.into(),
                    })?;
            serde_json::json!({"practice_id": pid, "policy": policy})
        }
        Cmd::Scan {
            practice_id: id,
            date,
        } => {
            let pid = practice_id(&id)?;
            let p = store
                .get_practice(&pid)
                .await?
                .ok_or_else(|| anyhow!("practice {id} not found"))?;
            let day = match date {
                Some(d) => d.parse::<Date>().with_context(|| "--date: YYYY-MM-DD")?,
                None => p.local_date(jiff::Timestamp::now()),
            };
            let deps = scheduler_scan::Deps::new(&clients, &config, Meter::default())
                .map_err(|e| anyhow!("{e}"))?;
            let report = deps.scan(&pid, day).await?;
            serde_json::json!({
                "practice_id": pid, "scan_date": day, "due_read": report.due_read,
                "created": report.created, "handed_over": report.handed_over,
                "suppressed": report.suppressed, "deferred": report.deferred,
                "republished": report.republished,
            })
        }
        Cmd::Audit(AuditCmd::Verify { practice_id: id }) => {
            let pid = practice_id(&id)?;
            let (records, head) = store.audit_trail(&pid).await?;
            let head = head.as_ref().map(|(s, h)| (*s, h.as_str()));
            let summary = shared::audit::verify(&records, head, jiff::Timestamp::now())
                .map_err(|b| anyhow!("audit trail of {pid} is broken at {b}"))?;
            serde_json::json!({"practice_id": pid, "verified": true, "records": summary.records,
                "first_seq": summary.first_seq, "last_seq": summary.last_seq, "head": summary.head})
        }
        Cmd::Audit(AuditCmd::Show { practice_id: id }) => {
            let pid = practice_id(&id)?;
            let (mut records, _) = store.audit_trail(&pid).await?;
            records.sort_by_key(|r| r.seq);
            serde_json::to_value(records)?
        }
        Cmd::Secret(SecretCmd::Rotate {
            practice_id: id,
            which,
            overlap_hours,
            force,
        }) => {
            let pid = practice_id(&id)?;
            let which = SecretKind::from(which);
            let out = admin::rotate_secret(
                store,
                adapters.secrets.keys(),
                &pid,
                which,
                overlap_hours,
                force,
                // Whole seconds: the instants printed and stored read cleanly.
                jiff::Timestamp::from_second(jiff::Timestamp::now().as_second())?,
            )
            .await
            .map_err(|e| rotate_err(e, &pid))?;
            let next = rotation_next_step(which, out.old_valid_until, out.overlap_hours);
            let mut json = serde_json::to_value(&out)?;
            json["next_step"] = next.into();
            json
        }
        Cmd::Secret(SecretCmd::Reseal {
            practice_id: id,
            all,
        }) => {
            let ids = match (id, all) {
                (Some(id), _) => vec![practice_id(&id)?],
                (None, _) => store.list_practices().await?,
            };
            let mut out = Vec::with_capacity(ids.len());
            for pid in ids {
                let r = admin::reseal_secrets(
                    store,
                    adapters.secrets.keys(),
                    &pid,
                    jiff::Timestamp::now(),
                )
                .await
                .map_err(|e| match e {
                    admin::AdminError::NotFound(_) => anyhow!("practice {pid} not found: check --practice-id (nothing was changed)"),
                    e => anyhow!("practice {pid}: {e}; its secrets were not changed (practices listed before it are done): check access to the stack's KMS key and run the command again"),
                })?;
                out.push(serde_json::to_value(r)?);
            }
            serde_json::Value::Array(out)
        }
        Cmd::Ref(_) => unreachable!("`pil ref` is run by main, before any configuration"),
        Cmd::Conformance(_) => {
            unreachable!("`pil conformance` is run by main, before any configuration")
        }
        Cmd::Import(a) => {
            let pid = practice_id(&a.practice_id)?;
            let secret_text = match &a.secret_file {
                Some(p) => std::fs::read_to_string(p)
                    .with_context(|| format!("--secret-file {}: cannot read it", p.display()))?,
                None => std::env::var("PIL_WEBHOOK_SECRET").map_err(|_| {
                    anyhow!("the webhook secret: pass --secret-file PATH or set PIL_WEBHOOK_SECRET")
                })?,
            };
            let secret = shared::signature::WebhookSecret::parse(secret_text.trim())
                .map_err(|_| anyhow!("the webhook secret: not a whsec_ secret"))?;
            let api_url = match &a.api_url {
                Some(u) => u.clone(),
                None => config
                    .get("PUBLIC_BASE_URL")
                    .map_err(|e| anyhow!("{e}; or pass --api-url"))?
                    .to_owned(),
            };
            let events = match &a.file {
                Some(p) => import::read_events(std::io::BufReader::new(
                    std::fs::File::open(p)
                        .with_context(|| format!("--file {}: cannot open it", p.display()))?,
                ))?,
                None => import::read_events(std::io::stdin().lock())?,
            };
            import::Import {
                api_url: &api_url,
                practice_id: pid.as_str(),
                secret: &secret,
                batch_size: a.batch_size,
            }
            .run(&events)
            .await?
        }
        Cmd::Report(r) if r.integration => {
            let pid = practice_id(&r.practice_id)?;
            if store.get_practice(&pid).await?.is_none() {
                return Err(anyhow!("practice {pid} not found"));
            }
            let since =
                jiff::Timestamp::now() - jiff::SignedDuration::from_hours(i64::from(r.hours));
            let out = shared::service::ops::integration_report(store, &pid, since).await?;
            if r.json {
                serde_json::to_value(out)?
            } else {
                serde_json::Value::String(out.table())
            }
        }
        Cmd::Status(a) => {
            let only = a.practice_id.as_deref().map(practice_id).transpose()?;
            let out = pil_aws::status::stack_status(
                store,
                &clients.sqs,
                &config,
                only.as_ref(),
                jiff::Timestamp::now(),
            )
            .await?;
            if a.json {
                out
            } else {
                serde_json::Value::String(pil_aws::status::stack_status_table(&out))
            }
        }
        Cmd::Dlq(DlqCmd::Show { queue, max }) => {
            ops::show(&clients.sqs, &config, ops::dlq_name(&queue)?, max).await?
        }
        Cmd::Dlq(DlqCmd::Redrive {
            queue,
            max,
            retry_failed,
        }) => {
            ops::redrive(
                &clients.sqs,
                store,
                &config,
                ops::dlq_name(&queue)?,
                max,
                retry_failed,
            )
            .await?
        }
        Cmd::Report(r) => {
            let pid = practice_id(&r.practice_id)?;
            let day = |flag: &str, v: &str| {
                v.parse::<Date>()
                    .with_context(|| format!("{flag}: YYYY-MM-DD"))
            };
            let (from, to) = (
                day("--from", r.from.as_deref().unwrap_or_default())?,
                day("--to", r.to.as_deref().unwrap_or_default())?,
            );
            let out = report::report(store, store, &pid, from, to, jiff::Timestamp::now())
                .await
                .map_err(|e| match e {
                    report::ReportError::UnknownPractice => anyhow!("practice {pid} not found"),
                    other => anyhow!(other),
                })?;
            if r.json {
                serde_json::to_value(out)?
            } else {
                serde_json::Value::String(out.table())
            }
        }
    })
}
