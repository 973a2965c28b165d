//! Test support: a local stack per test (its own moto on free ports), an onboarded practice,
//! a signing PMS client, and helpers to look everywhere a value could have leaked.

use std::time::Duration;

use anyhow::Result;
use pil_local::pms::{PmsClient, Reply};
pub use pil_local::stack::{Stack, StackOptions, workspace_root};
use shared::ids::PracticeId;
use shared::service::admin;
use shared::signature::WebhookSecret;

pub use pil_local::capture::Captured;
pub use pil_local::scenario::{eventually, new_ref, table_dump, table_items};

pub struct TestStack {
    pub stack: Stack,
    pub practice: PracticeId,
    pub secret: WebhookSecret,
    pub trigger_secret: WebhookSecret,
    pub pms: PmsClient,
    /// The table through the stack's own client: never through the fault proxy, so tests
    /// can look while the handlers' calls fail.
    direct: pil_aws::DynamoStore,
}

impl TestStack {
    /// A stack with one onboarded practice (`America/New_York`, default policy).
    pub async fn start() -> Result<Self> {
        Self::start_with(StackOptions::ephemeral(workspace_root())?).await
    }

    /// As [`TestStack::start`], with the handlers' calls through the fault proxy (no faults
    /// injected), which records every message and e-mail they send ([`TestStack::sent`]).
    pub async fn start_recorded() -> Result<Self> {
        let mut opts = StackOptions::ephemeral(workspace_root())?;
        opts.fault_proxy = true;
        Self::start_with(opts).await
    }

    /// Every string in what the handlers sent ([`TestStack::sent`]), unescaped: the SDK's
    /// JSON and the JSON inside it (a queue message's body, an event's detail, an e-mail), as
    /// far down as it goes. Fails unless the recording holds a queue message and an e-mail
    /// and every send reached the emulator.
    pub fn sent_text(&self) -> String {
        fn texts(s: &str, out: &mut Vec<String>) {
            fn walk(v: &serde_json::Value, out: &mut Vec<String>) {
                match v {
                    serde_json::Value::String(s) => texts(s, out),
                    serde_json::Value::Array(a) => a.iter().for_each(|v| walk(v, out)),
                    serde_json::Value::Object(o) => o.iter().for_each(|(k, v)| {
                        out.push(k.clone());
                        walk(v, out);
                    }),
                    _ => {}
                }
            }
            out.push(s.to_owned());
            if let Ok(v) = serde_json::from_str::<serde_json::Value>(s)
                && (v.is_object() || v.is_array())
            {
                walk(&v, out);
            }
        }
        let sent = self.sent();
        for op in ["SendMessage", "SendEmail"] {
            assert!(
                sent.iter().any(|s| s.operation == op),
                "the recording holds no {op}: {sent:?}"
            );
        }
        assert!(
            sent.iter().all(|s| s.status == Some(200)),
            "every send reached the emulator: {sent:?}"
        );
        let mut out = Vec::new();
        for s in &sent {
            texts(&s.body, &mut out);
        }
        let text = out.join("\n");
        assert!(
            text.contains(self.practice.as_str()),
            "the recording is read unescaped"
        );
        text
    }

    pub async fn start_with(opts: StackOptions) -> Result<Self> {
        let stack = Stack::start(opts).await?;
        let onboarded = stack.onboard("test-clinic").await?;
        let (practice, secret, trigger_secret) = (
            onboarded.practice,
            onboarded.webhook_secret,
            onboarded.trigger_secret,
        );
        let pms = PmsClient::new(&stack.api_url);
        let table = stack
            .env
            .iter()
            .find(|(k, _)| k == "TABLE_NAME")
            .map(|(_, v)| v.clone())
            .ok_or_else(|| anyhow::anyhow!("stack.env has no TABLE_NAME"))?;
        let direct = pil_aws::DynamoStore::new(
            stack.clients.dynamodb.clone(),
            table,
            pil_aws::Meter::default(),
        );
        Ok(Self {
            stack,
            practice,
            secret,
            trigger_secret,
            pms,
            direct,
        })
    }

    /// The practice's current link key (the one new owner links are signed with).
    pub async fn link_key(&self) -> shared::token::LinkKey {
        use shared::ports::PracticeRepo as _;
        let practice = self
            .store()
            .get_practice(&self.practice)
            .await
            .expect("read the practice")
            .expect("the practice exists");
        self.stack
            .scan_deps()
            .expect("scan deps")
            .adapters
            .secrets
            .link(&practice.id, &practice.secrets)
            .await
            .expect("the link key")
    }

    /// The table, read and written directly (not metered, never through the fault proxy).
    pub fn store(&self) -> &pil_aws::DynamoStore {
        &self.direct
    }

    /// Sets one kind's policy mode (`pil policy set --kind K --mode M`).
    pub async fn set_mode(&self, kind: shared::action::ActionKind, mode: shared::practice::Mode) {
        admin::set_kind_policy(
            self.store(),
            &self.practice,
            kind,
            admin::KindChange {
                mode: Some(mode),
                ..Default::default()
            },
        )
        .await
        .expect("policy set");
    }

    pub async fn send(&self, webhook_id: &str, body: &serde_json::Value) -> Reply {
        self.pms
            .send(
                self.practice.as_str(),
                &self.secret,
                webhook_id,
                &body.to_string(),
            )
            .await
            .expect("request")
    }

    /// Sends a scan message through the scan queue, as the schedule does.
    pub async fn scan_via_queue(&self, date: jiff::civil::Date) {
        let url = self
            .stack
            .resource("ScanQueue")
            .expect("ScanQueue")
            .to_owned();
        let body = serde_json::json!({"kind": "scan", "practice_id": self.practice.as_str(), "date": date.to_string()});
        self.stack
            .clients
            .sqs
            .send_message()
            .queue_url(url)
            .message_body(body.to_string())
            .send()
            .await
            .expect("send");
    }

    pub fn today(&self) -> jiff::civil::Date {
        jiff::Timestamp::now()
            .to_zoned(jiff::tz::TimeZone::get("America/New_York").expect("tz"))
            .date()
    }

    /// Up to ten message bodies sitting in each queue of the template (made visible again
    /// after), e.g. what a DLQ holds. What was sent, also once handled, is [`TestStack::sent`].
    pub async fn queue_dump(&self) -> String {
        let mut out = String::new();
        for (name, url) in &self.stack.deployed.refs {
            if !(name.ends_with("Queue") || name.ends_with("DLQ")) {
                continue;
            }
            let r = self
                .stack
                .clients
                .sqs
                .receive_message()
                .queue_url(url)
                .max_number_of_messages(10)
                .visibility_timeout(0)
                .send()
                .await
                .unwrap_or_else(|e| panic!("reading {name}: {e}"));
            for m in r.messages.unwrap_or_default() {
                out.push_str(m.body.as_deref().unwrap_or(""));
                out.push('\n');
            }
        }
        out
    }

    /// How many messages from the queue `queue` (its logical name) a function has handled
    /// whose body contains `needle`, processed or left for redelivery.
    pub fn handled(&self, queue: &str, needle: &str) -> usize {
        let url = self.stack.resource(queue).expect("a queue of the template");
        self.stack
            .handled()
            .iter()
            .filter(|h| h.queue_url == url && h.body.contains(needle))
            .count()
    }

    /// Waits until at least `n` messages from `queue` whose body contains `needle` have been
    /// handled (see [`TestStack::handled`]), then until nothing queued is left to happen
    /// ([`TestStack::settled`]). Panics after [`WAIT`].
    pub async fn wait_handled(&self, queue: &str, needle: &str, n: usize) {
        eventually(WAIT, || async {
            (self.handled(queue, needle) >= n).then_some(())
        })
        .await
        .unwrap_or_else(|| {
            panic!(
                "{queue}: {} of {n} messages handled",
                self.handled(queue, needle)
            )
        });
        self.settled().await;
    }

    /// Waits until every queue a function polls is empty (nothing visible, in flight or
    /// delayed), twice in a row: whatever the handlers were doing has finished, and nothing
    /// more will happen unless something new arrives. Panics after [`WAIT`].
    pub async fn settled(&self) {
        use std::sync::atomic::{AtomicBool, Ordering};
        let idle_before = AtomicBool::new(false);
        eventually(WAIT, || async {
            let idle = self.stack.queues_idle().await.expect("queue attributes");
            (idle_before.swap(idle, Ordering::SeqCst) && idle).then_some(())
        })
        .await
        .expect("the queues drain");
    }

    /// Every e-mail the emulator has taken; an emulator that cannot be read fails the test.
    pub async fn emails(&self) -> Vec<pil_local::moto::SentEmail> {
        self.stack
            .moto
            .sent_emails()
            .await
            .expect("reading the e-mails the emulator holds")
    }

    /// Every message the handlers sent through the fault proxy (queue messages, bus events,
    /// e-mails): a stack started with [`StackOptions::fault_proxy`] only.
    pub fn sent(&self) -> Vec<pil_local::fault::Sent> {
        self.stack
            .faults
            .as_ref()
            .expect("a stack with the fault proxy")
            .sent()
    }

    pub async fn stop(self) {
        self.stack.stop().await;
    }
}

pub fn ago(days: i64) -> String {
    (jiff::Timestamp::now() - jiff::SignedDuration::from_hours(24 * days)).to_string()
}

pub fn completed(patient: &str, treatment: &str, days_ago: i64) -> serde_json::Value {
    serde_json::json!({"type": "appointment.completed", "occurred_at": ago(days_ago),
        "data": {"appointment_ref": new_ref("appt"), "patient_ref": patient, "treatment": treatment}})
}

pub const WAIT: Duration = Duration::from_secs(30);

/// The Square access token and webhook signature key the test relays are set up with.
pub const SQUARE_TOKEN: &str = "EAAAl-test-access-token";
pub const SQUARE_SIGNATURE_KEY: &str = "test-signature-key";

pub use pil_local::square_seller::{Seller, SquareSetup};

/// A practice on Square: the simulated seller (Botox and lip filler mapped, a consultation
/// not) connected through its relay to a new practice `practice_id`.
pub async fn square_setup(stack: &Stack, practice_id: &str) -> Result<SquareSetup> {
    Seller::start(SQUARE_TOKEN)
        .await?
        .connect(stack, practice_id, SQUARE_SIGNATURE_KEY)
        .await
}
