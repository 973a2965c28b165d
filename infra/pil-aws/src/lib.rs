//! AWS adapters for the domain ports, and the per-cold-start wiring every handler shares.

pub mod adapters;
pub mod lambda;
pub mod meter;
pub mod metrics;
#[cfg(feature = "sqs")]
pub mod status;
pub mod store;

use std::collections::HashMap;
#[cfg(feature = "kms")]
use std::sync::Arc;
use std::time::Duration;

use aws_credential_types::Credentials;
use aws_credential_types::provider::SharedCredentialsProvider;
use aws_smithy_async::rt::sleep::TokioSleep;
use aws_smithy_async::time::SystemTimeSource;
use aws_smithy_http_client::tls::{self, TlsContext, TrustStore};
use aws_smithy_runtime_api::client::behavior_version::BehaviorVersion;
use aws_smithy_runtime_api::client::http::SharedHttpClient;
use aws_smithy_types::retry::RetryConfig;
use aws_smithy_types::timeout::TimeoutConfig;
use aws_types::SdkConfig;
use aws_types::region::Region;
use shared::ports::SystemClock;
pub use shared::practice::TriggerUrlScope;
#[cfg(feature = "kms")]
use shared::secrets::SecretCache;
use shared::service::emitter::RetryPolicy;

#[cfg(feature = "eventbridge")]
pub use adapters::EventBus;
#[cfg(feature = "http")]
pub use adapters::HttpTransport;
#[cfg(feature = "kms")]
pub use adapters::KmsKeys;
#[cfg(feature = "sesv2")]
pub use adapters::SesMailer;
#[cfg(feature = "sqs")]
pub use adapters::SqsQueue;
pub use meter::Meter;
pub use metrics::Metrics;
pub use store::DynamoStore;

/// Configuration, read from the environment in Lambda and from a map in the local stack.
/// Names match the template's `Environment.Variables`.
#[derive(Debug, Clone, Default)]
pub struct Config {
    vars: HashMap<String, String>,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("missing configuration variable {0}")]
pub struct MissingVar(pub &'static str);

impl Config {
    pub fn from_env() -> Self {
        Self {
            vars: std::env::vars().collect(),
        }
    }
    pub fn from_map(vars: HashMap<String, String>) -> Self {
        Self { vars }
    }
    pub fn get(&self, k: &'static str) -> Result<&str, MissingVar> {
        self.vars
            .get(k)
            .map(String::as_str)
            .filter(|v| !v.is_empty())
            .ok_or(MissingVar(k))
    }
    pub fn opt(&self, k: &str) -> Option<&str> {
        self.vars
            .get(k)
            .map(String::as_str)
            .filter(|v| !v.is_empty())
    }
    pub fn num<T: std::str::FromStr>(&self, k: &str, default: T) -> T {
        self.opt(k).and_then(|v| v.parse().ok()).unwrap_or(default)
    }
    /// Whether a handler warms what it would otherwise build on its first request (regexes,
    /// the pages' CSP) in init: yes unless `PIL_INIT_WARMUP=0` (the cold-start bench's
    /// comparison, `make bench-cold`).
    pub fn warm_up(&self) -> bool {
        self.opt("PIL_INIT_WARMUP") != Some("0")
    }
    pub fn table(&self) -> Result<&str, MissingVar> {
        self.get("TABLE_NAME")
    }
    /// Which trigger URLs this process accepts and sends to: [`TriggerUrlScope::Deployed`]
    /// (https to a public host) unless `PIL_ALLOW_LOOPBACK_HTTP=1`, the local stack's switch
    /// (loopback hosts too, over http). Only the local stack and its benches set it; the
    /// template never does (a test below reads it).
    pub fn trigger_url_scope(&self) -> TriggerUrlScope {
        if self.opt("PIL_ALLOW_LOOPBACK_HTTP") == Some("1") {
            TriggerUrlScope::LocalStack
        } else {
            TriggerUrlScope::Deployed
        }
    }
    pub fn retry_policy(&self) -> RetryPolicy {
        let d = RetryPolicy::default();
        RetryPolicy {
            max_attempts: self.num("TRIGGER_MAX_ATTEMPTS", d.max_attempts),
            horizon_seconds: self.num("TRIGGER_RETRY_HORIZON_SECONDS", d.horizon_seconds),
            base_seconds: self.num("TRIGGER_BACKOFF_BASE_SECONDS", d.base_seconds),
            cap_seconds: self.num("TRIGGER_BACKOFF_CAP_SECONDS", d.cap_seconds),
            lease_seconds: self.num("TRIGGER_LEASE_SECONDS", d.lease_seconds),
            quiet_recheck_seconds: self
                .num("TRIGGER_QUIET_RECHECK_SECONDS", d.quiet_recheck_seconds),
        }
    }
}

/// The SDK clients, built once per cold start: DynamoDB always, the others with their cargo
/// feature (each handler enables only the ones it calls, see Cargo.toml: a client costs about
/// 0.2 ms of init, docs/performance.md). SES is built on demand ([`Clients::sesv2`]): only
/// approval-check mails, and the local stack and the CLI share one `Clients` among all.
#[derive(Debug, Clone)]
pub struct Clients {
    pub dynamodb: aws_sdk_dynamodb::Client,
    #[cfg(feature = "kms")]
    pub kms: aws_sdk_kms::Client,
    #[cfg(feature = "sqs")]
    pub sqs: aws_sdk_sqs::Client,
    #[cfg(feature = "eventbridge")]
    pub eventbridge: aws_sdk_eventbridge::Client,
    /// What [`Clients::sesv2`] builds its client from.
    #[cfg(feature = "sesv2")]
    sdk_config: SdkConfig,
}

/// The root certificates the AWS clients trust: Amazon Trust Services' four roots and the
/// Starfield Services G2 root that cross-signs them, the chain AWS documents for every service
/// endpoint. Compiled in: nothing is read from disk in init.
pub const AWS_TRUST_ROOTS_PEM: &str = include_str!("../certs/amazon-trust-services.pem");

/// The one HTTP client every SDK client of a process shares (HTTPS, and plain HTTP for a
/// loopback emulator): hyper 1 and rustls on ring, trusting [`AWS_TRUST_ROOTS_PEM`] and, only
/// when `native_roots` is set (`PIL_TLS_NATIVE_ROOTS=1`, e.g. behind a TLS-inspecting proxy),
/// the system's certificates too.
///
/// Why not the SDK's default client: it builds a connector per SDK client, and each one turns
/// the system's certificate store (loaded from disk once) into a rustls root store; with two
/// to three clients that was most of each handler's init (docs/performance.md). Built here
/// once, the clients share one connector (one per distinct timeout setting) and one
/// connection pool. ring instead of aws-lc-rs: the same TLS suites, about 2 MB less per
/// bootstrap.
pub fn https_client(native_roots: bool) -> SharedHttpClient {
    let trust = TrustStore::empty()
        .with_native_roots(native_roots)
        .with_pem_certificate(AWS_TRUST_ROOTS_PEM.as_bytes());
    let tls = TlsContext::builder()
        .with_trust_store(trust)
        .build()
        .expect("a TLS context without extra server names always builds");
    aws_smithy_http_client::Builder::new()
        .tls_provider(tls::Provider::Rustls(
            tls::rustls_provider::CryptoMode::Ring,
        ))
        .tls_context(tls)
        .build_https()
}

/// aws-config's default connect timeout (the handlers' config matches what
/// `aws_config::load_from_env` would give them).
const CONNECT_TIMEOUT: Duration = Duration::from_millis(3100);

impl Clients {
    pub fn new(cfg: &SdkConfig) -> Self {
        Self {
            dynamodb: aws_sdk_dynamodb::Client::new(cfg),
            #[cfg(feature = "kms")]
            kms: aws_sdk_kms::Client::new(cfg),
            #[cfg(feature = "sqs")]
            sqs: aws_sdk_sqs::Client::new(cfg),
            #[cfg(feature = "eventbridge")]
            eventbridge: aws_sdk_eventbridge::Client::new(cfg),
            #[cfg(feature = "sesv2")]
            sdk_config: cfg.clone(),
        }
    }

    /// A SESv2 client on the same configuration (and the same HTTPS client). Built by the
    /// caller once, in init, where mail is sent: each SDK client's construction is a share of
    /// a cold start (docs/performance.md).
    #[cfg(feature = "sesv2")]
    pub fn sesv2(&self) -> aws_sdk_sesv2::Client {
        aws_sdk_sesv2::Client::new(&self.sdk_config)
    }

    /// In Lambda: what [`lambda_sdk_config`] reads from the environment Lambda sets.
    pub fn from_lambda_env(config: &Config) -> Result<Self, MissingVar> {
        Ok(Self::new(&lambda_sdk_config(config)?))
    }

    /// From aws-config's default chain (profiles, SSO, IMDS, web identity…): the CLI on a
    /// workstation, or a shell with `stack.env` sourced.
    #[cfg(feature = "config-chain")]
    pub async fn from_env() -> Self {
        Self::new(&chain_sdk_config().await)
    }

    /// For the local stack and tests: a fixed endpoint, region and dummy credentials.
    pub fn local(endpoint: &str, region: &str) -> Self {
        Self::local_with_timeout(endpoint, region, Duration::from_secs(10))
    }

    /// [`Self::local`] with another per-attempt timeout (benches whose emulator calls take
    /// longer than a real service's, e.g. moto querying a 100,000-item table).
    pub fn local_with_timeout(endpoint: &str, region: &str, attempt: Duration) -> Self {
        let cfg = SdkConfig::builder()
            .endpoint_url(endpoint)
            .region(Region::new(region.to_owned()))
            .credentials_provider(SharedCredentialsProvider::new(Credentials::new(
                "testing",
                "testing",
                None,
                None,
                "pil-local",
            )))
            .behavior_version(BehaviorVersion::latest())
            .http_client(https_client(false))
            .timeout_config(
                TimeoutConfig::builder()
                    .operation_attempt_timeout(attempt)
                    .connect_timeout(Duration::from_secs(3))
                    .build(),
            )
            .build();
        Self::new(&cfg)
    }
}

/// aws-config's default chain with the shared [`https_client`] (`PIL_TLS_NATIVE_ROOTS=1` adds
/// the system's root certificates).
#[cfg(feature = "config-chain")]
pub async fn chain_sdk_config() -> SdkConfig {
    let native = std::env::var("PIL_TLS_NATIVE_ROOTS").as_deref() == Ok("1");
    aws_config::defaults(BehaviorVersion::latest())
        .http_client(https_client(native))
        .load()
        .await
}

/// The SDK configuration of a Lambda function, from the variables Lambda sets: `AWS_REGION`,
/// and the execution role's credentials in `AWS_ACCESS_KEY_ID`, `AWS_SECRET_ACCESS_KEY`,
/// `AWS_SESSION_TOKEN` (fixed for the execution environment's life). `AWS_ENDPOINT_URL`, when
/// set, points every client elsewhere (the cold-start bench's emulator). Standard retries (3
/// attempts) and a 3.1 s connect timeout, as `aws_config::load_from_env` would set; one
/// shared [`https_client`].
///
/// Why not `aws_config::load_from_env`: its default chains (profile files, SSO, IMDS, ECS,
/// web identity through STS) can never apply in Lambda, yet they are linked in because they
/// are chosen at run time: about 1 MB of each bootstrap (docs/performance.md).
pub fn lambda_sdk_config(config: &Config) -> Result<SdkConfig, MissingVar> {
    let credentials = Credentials::new(
        config.get("AWS_ACCESS_KEY_ID")?,
        config.get("AWS_SECRET_ACCESS_KEY")?,
        config.opt("AWS_SESSION_TOKEN").map(str::to_owned),
        None,
        "lambda-environment",
    );
    let mut b = SdkConfig::builder()
        .region(Region::new(config.get("AWS_REGION")?.to_owned()))
        .credentials_provider(SharedCredentialsProvider::new(credentials))
        .behavior_version(BehaviorVersion::latest())
        .http_client(https_client(
            config.opt("PIL_TLS_NATIVE_ROOTS") == Some("1"),
        ))
        .retry_config(RetryConfig::standard())
        .timeout_config(
            TimeoutConfig::builder()
                .connect_timeout(CONNECT_TIMEOUT)
                .build(),
        )
        .time_source(SystemTimeSource::new())
        .sleep_impl(TokioSleep::new());
    if let Some(url) = config.opt("AWS_ENDPOINT_URL") {
        b = b.endpoint_url(url);
    }
    Ok(b.build())
}

/// The adapters every handler may use. Each handler takes what it needs.
#[derive(Debug, Clone)]
pub struct Adapters {
    pub store: DynamoStore,
    /// The practices' secrets, opened with KMS: for the functions that verify, sign or link
    /// (the scan holds none, so it builds no KMS client).
    #[cfg(feature = "kms")]
    pub secrets: Arc<SecretCache>,
    pub clock: SystemClock,
}

impl Adapters {
    pub fn new(clients: &Clients, config: &Config, meter: Meter) -> Result<Self, MissingVar> {
        let store = DynamoStore::new(clients.dynamodb.clone(), config.table()?, meter);
        Ok(Self {
            store,
            #[cfg(feature = "kms")]
            secrets: {
                let keys = KmsKeys::new(clients.kms.clone(), config.get("KMS_KEY_ID")?);
                // Opened secrets are cached per practice, keyed by their sealed form (a
                // rotation is seen at the next read of the practice), for at most
                // SECRET_CACHE_SECONDS (6 h): each refresh costs one KMS Decrypt per practice
                // and function (docs/cost.md); the bound is how long a warm container keeps
                // using secrets after the key is disabled.
                let ttl = Duration::from_secs(config.num("SECRET_CACHE_SECONDS", 21_600));
                Arc::new(SecretCache::new(Arc::new(keys), ttl))
            },
            clock: SystemClock,
        })
    }
}

#[cfg(feature = "kms")]
impl Adapters {
    /// What the owner's side needs (the digest, the pages, the settings links): the store in
    /// each of its roles, these secrets and this clock, with `bus`, `mailer` and the public
    /// `base_url` links in e-mails start with.
    pub fn approval_deps<'a>(
        &'a self,
        bus: &'a dyn shared::ports::EventPublisher,
        mailer: &'a dyn shared::ports::Mailer,
        base_url: &'a str,
    ) -> shared::service::approval::ApprovalDeps<'a> {
        let s = &self.store;
        shared::service::approval::ApprovalDeps {
            practices: s,
            actions: s,
            entities: s,
            due: s,
            log: s,
            audit: s,
            admin: s,
            tokens: s,
            bus,
            mailer,
            secrets: &self.secrets,
            clock: &self.clock,
            base_url,
        }
    }
}

/// Structured logs: JSON in Lambda (one object per line, ids and reason codes only), compact
/// text elsewhere. Level from `RUST_LOG`. A line logged while an SQS message is handled
/// carries the message's span (`lambda::sqs_batch`) as `"span": {"name": "sqs_message",
/// "message_id": …, "practice_id": …, "action_id": …}`; the list of enclosing spans is left
/// out (there is only that one).
pub fn init_logging() {
    use tracing_subscriber::prelude::*;
    // RUST_LOG as `level` or `target=level,…` (what the template's LogLevel sets). A
    // `Targets` filter reads that without the regex engine `EnvFilter` links and builds for
    // span and field directives, which these functions never use (docs/performance.md).
    let filter = log_filter(std::env::var("RUST_LOG").ok().as_deref());
    let fmt = tracing_subscriber::fmt::layer().with_target(false);
    let _ = if std::env::var("AWS_LAMBDA_FUNCTION_NAME").is_ok() {
        tracing_subscriber::registry()
            .with(
                fmt.json()
                    .flatten_event(true)
                    .with_span_list(false)
                    .without_time()
                    .with_filter(filter),
            )
            .try_init()
    } else {
        tracing_subscriber::registry()
            .with(fmt.with_writer(std::io::stderr).with_filter(filter))
            .try_init()
    };
}

/// The handlers' log filter from `RUST_LOG`: a level (`info`) or `target=level` directives;
/// `info` when unset or unreadable (as `EnvFilter::try_from_default_env` fell back before).
pub fn log_filter(rust_log: Option<&str>) -> tracing_subscriber::filter::Targets {
    use tracing_subscriber::filter::{LevelFilter, Targets};
    rust_log
        .and_then(|v| v.parse::<Targets>().ok())
        .unwrap_or_else(|| Targets::new().with_default(LevelFilter::INFO))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_the_local_switch_widens_the_trigger_url_scope() {
        let with = |v: &str| {
            Config::from_map([("PIL_ALLOW_LOOPBACK_HTTP".to_owned(), v.to_owned())].into())
                .trigger_url_scope()
        };
        assert_eq!(
            Config::default().trigger_url_scope(),
            TriggerUrlScope::Deployed
        );
        assert_eq!(with("0"), TriggerUrlScope::Deployed);
        assert_eq!(with("true"), TriggerUrlScope::Deployed);
        assert_eq!(with("1"), TriggerUrlScope::LocalStack);
        // The deployed functions' configuration is the template's: it never sets the switch.
        let template = include_str!("../../../template.yaml");
        assert!(!template.contains("PIL_ALLOW_LOOPBACK_HTTP"));
    }

    /// Deployed, the transport sends nothing to an http URL, whatever the stored practice
    /// says; the local stack's transport does (loopback only, as its URLs are).
    #[cfg(feature = "http")]
    #[tokio::test]
    async fn the_deployed_trigger_transport_refuses_http() {
        use shared::ports::{TransportError, TriggerTransport};
        use shared::practice::TriggerUrl;
        use std::sync::Arc;
        use std::sync::atomic::{AtomicUsize, Ordering};
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let connections = Arc::new(AtomicUsize::new(0));
        let seen = connections.clone();
        tokio::spawn(async move {
            while let Ok((mut sock, _)) = listener.accept().await {
                seen.fetch_add(1, Ordering::SeqCst);
                let mut buf = vec![0u8; 16 * 1024];
                let _ = sock.read(&mut buf).await;
                let _ = sock
                    .write_all(b"HTTP/1.1 204 No Content\r\ncontent-length: 0\r\n\r\n")
                    .await;
            }
        });
        let url = TriggerUrl::parse(
            &format!("http://{addr}/triggers"),
            TriggerUrlScope::LocalStack,
        )
        .unwrap();
        let deployed =
            adapters::HttpTransport::new(Duration::from_secs(5), TriggerUrlScope::Deployed)
                .unwrap();
        let refused = deployed.post(&url, &[], b"{}".to_vec()).await;
        assert_eq!(refused, Err(TransportError::Refused));
        let local =
            adapters::HttpTransport::new(Duration::from_secs(5), TriggerUrlScope::LocalStack)
                .unwrap();
        let sent = local.post(&url, &[], b"{}".to_vec()).await.unwrap();
        assert_eq!(sent.status, 204);
        assert_eq!(
            connections.load(Ordering::SeqCst),
            1,
            "only the local post connected"
        );
    }

    #[test]
    fn log_filter_reads_levels_and_target_directives() {
        use tracing::Level;
        let default = log_filter(None);
        assert!(default.would_enable("shared", &Level::INFO));
        assert!(!default.would_enable("shared", &Level::DEBUG));
        let warn = log_filter(Some("warn"));
        assert!(warn.would_enable("shared", &Level::WARN));
        assert!(!warn.would_enable("shared", &Level::INFO));
        let targets = log_filter(Some("warn,shared=debug"));
        assert!(targets.would_enable("shared::service", &Level::DEBUG));
        assert!(!targets.would_enable("aws_smithy_runtime", &Level::INFO));
        // Unreadable: the default, not silence.
        let bad = log_filter(Some("shared=loud"));
        assert!(bad.would_enable("shared", &Level::INFO));
        assert!(!bad.would_enable("shared", &Level::DEBUG));
    }

    /// The compiled-in roots parse (the SDK's connector would panic on a bad PEM) and are
    /// exactly the Amazon Trust Services set.
    #[cfg(feature = "http")]
    #[test]
    fn the_aws_trust_roots_are_the_five_amazon_trust_services_roots() {
        use rustls::pki_types::CertificateDer;
        use rustls::pki_types::pem::PemObject;
        let certs = CertificateDer::pem_slice_iter(AWS_TRUST_ROOTS_PEM.as_bytes())
            .collect::<Result<Vec<_>, _>>()
            .expect("valid PEM");
        assert_eq!(certs.len(), 5);
        let mut roots = rustls::RootCertStore::empty();
        let (valid, invalid) = roots.add_parsable_certificates(certs);
        assert_eq!((valid, invalid), (5, 0));
        for name in [
            "Amazon Root CA 1",
            "Amazon Root CA 2",
            "Amazon Root CA 3",
            "Amazon Root CA 4",
            "Starfield Services Root Certificate Authority - G2",
        ] {
            assert!(
                roots.roots.iter().any(|r| r
                    .subject
                    .as_ref()
                    .windows(name.len())
                    .any(|w| w == name.as_bytes())),
                "{name}"
            );
        }
    }

    /// The Lambda configuration's shared client builds (its TLS configuration included) and
    /// carries a signed call to a plain-HTTP endpoint (the emulator's case).
    #[tokio::test]
    async fn lambda_clients_reach_a_plain_http_endpoint_through_the_shared_client() {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let server = tokio::spawn(async move {
            let (mut sock, _) = listener.accept().await.unwrap();
            let mut buf = vec![0u8; 8192];
            let n = sock.read(&mut buf).await.unwrap();
            let body = r#"{"TableNames":[]}"#;
            let reply = format!(
                "HTTP/1.1 200 OK\r\ncontent-type: application/x-amz-json-1.0\r\ncontent-length: {}\r\n\r\n{body}",
                body.len()
            );
            sock.write_all(reply.as_bytes()).await.unwrap();
            String::from_utf8_lossy(&buf[..n]).into_owned()
        });
        let mut vars = HashMap::new();
        for (k, v) in [
            ("AWS_REGION", "us-east-1"),
            ("AWS_ACCESS_KEY_ID", "a"),
            ("AWS_SECRET_ACCESS_KEY", "b"),
        ] {
            vars.insert(k.to_owned(), v.to_owned());
        }
        vars.insert("AWS_ENDPOINT_URL".into(), format!("http://{addr}"));
        let clients = Clients::from_lambda_env(&Config::from_map(vars)).unwrap();
        let out = clients.dynamodb.list_tables().send().await.unwrap();
        assert!(out.table_names().is_empty());
        let request = server.await.unwrap();
        assert!(request.starts_with("POST / HTTP/1.1"), "{request}");
        assert!(
            request
                .to_ascii_lowercase()
                .contains("authorization: aws4-hmac-sha256")
        );
    }
}
