//! Practice configuration and the owner's policy (docs/design.md §4.5, §5.3).

use std::collections::BTreeMap;
use std::fmt;
use std::net::{Ipv4Addr, Ipv6Addr};

use jiff::Timestamp;
use jiff::civil::Date;
use jiff::tz::TimeZone;
use serde::{Deserialize, Serialize};

use crate::action::ActionKind;
use crate::ids::PracticeId;
use crate::treatment::Treatment;

/// How a kind of action is handled.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Mode {
    /// Sent without asking, within the limits.
    Auto,
    /// The owner approves each one (the default).
    Approve,
    /// Never proposed.
    Off,
}

impl Mode {
    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "auto" => Some(Self::Auto),
            "approve" => Some(Self::Approve),
            "off" => Some(Self::Off),
            _ => None,
        }
    }
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Auto => "auto",
            Self::Approve => "approve",
            Self::Off => "off",
        }
    }
}

/// Per-kind policy. Anything over a limit falls back to owner approval.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct KindPolicy {
    pub mode: Mode,
    /// Most auto-approved actions of this kind per practice-local day.
    pub max_auto_per_day: u32,
    /// Largest estimated value that may be auto-approved.
    pub max_auto_value: u32,
}

impl Default for KindPolicy {
    fn default() -> Self {
        Self {
            mode: Mode::Approve,
            max_auto_per_day: 20,
            max_auto_value: 1000,
        }
    }
}

/// Quiet hours as people write them: `START-END` in local hours (`20-8`), or `none`.
/// `Err(())` for anything else, including equal or out-of-range hours.
#[allow(clippy::result_unit_err)]
pub fn parse_quiet_hours(s: &str) -> Result<Option<(u8, u8)>, ()> {
    let s = s.trim();
    if s == "none" {
        return Ok(None);
    }
    let (a, b) = s.split_once('-').ok_or(())?;
    let a: u8 = a.trim().parse().map_err(|_| ())?;
    let b: u8 = b.trim().parse().map_err(|_| ())?;
    if a > 23 || b > 23 || a == b {
        return Err(());
    }
    Ok(Some((a, b)))
}

/// The whole policy. `Policy::default()` is "everything needs approval" (docs/design.md §2.5).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Policy {
    pub kinds: BTreeMap<ActionKind, KindPolicy>,
    /// Days after a nudge before the same patient may be nudged again.
    pub cooldown_days: u32,
    /// Most nudges per patient in any 30 days.
    pub max_nudges_per_30_days: u32,
    /// Practice-local hours [start, end) in which triggers are not delivered.
    pub quiet_hours: Option<(u8, u8)>,
    /// Hours an approval link stays valid.
    pub approval_expiry_hours: u32,
    /// Slot fill offers an opened slot to this many due patients (docs/design.md §4.4, K).
    #[serde(default = "default_slot_fill_k")]
    pub slot_fill_k: u32,
    /// Most actions the nightly scan proposes (every mode: auto-approved ones count), highest
    /// estimated value and most overdue first; the rest wait for later nights in the same
    /// order (docs/contracts.md, Nightly budget).
    #[serde(default = "default_nightly_budget")]
    pub nightly_budget: u32,
}

fn default_slot_fill_k() -> u32 {
    3
}

/// 25: a digest one person reads and decides over a coffee (about a minute a card), and
/// what a front desk can follow up the next day. A practice that wants more raises it.
pub const DEFAULT_NIGHTLY_BUDGET: u32 = 25;

fn default_nightly_budget() -> u32 {
    DEFAULT_NIGHTLY_BUDGET
}

impl Default for Policy {
    fn default() -> Self {
        Self {
            kinds: ActionKind::ALL
                .into_iter()
                .map(|k| (k, KindPolicy::default()))
                .collect(),
            cooldown_days: 14,
            max_nudges_per_30_days: 2,
            quiet_hours: Some((20, 8)),
            approval_expiry_hours: 72,
            slot_fill_k: default_slot_fill_k(),
            nightly_budget: DEFAULT_NIGHTLY_BUDGET,
        }
    }
}

impl Policy {
    pub fn for_kind(&self, kind: ActionKind) -> KindPolicy {
        self.kinds.get(&kind).cloned().unwrap_or_default()
    }

    /// When `now` falls in the quiet hours (practice-local `[start, end)`, wrapping past
    /// midnight when start > end), the instant they end: delivery waits until then. `None`
    /// outside quiet hours, or with none set. The end is the next local `end:00`, so a DST
    /// change inside the window moves the instant, not the local hour.
    pub fn quiet_until(&self, tz: &TimeZone, now: jiff::Timestamp) -> Option<jiff::Timestamp> {
        let (start, end) = self.quiet_hours?;
        if start == end {
            return None;
        }
        let local = now.to_zoned(tz.clone());
        let h = local.hour();
        let (start, end) = (i8::try_from(start).ok()?, i8::try_from(end).ok()?);
        let quiet = if start < end {
            start <= h && h < end
        } else {
            h >= start || h < end
        };
        if !quiet {
            return None;
        }
        let mut day = local.date();
        loop {
            let at = day.at(end, 0, 0, 0).to_zoned(tz.clone()).ok()?.timestamp();
            if at > now {
                return Some(at);
            }
            day = day.tomorrow().ok()?;
        }
    }
}

/// Secrets as stored: sealed (KMS ciphertext, base64), each bound to its practice and purpose
/// ([`SecretContext`](crate::ports::SecretContext)). Opening them needs the key service.
///
/// Rotation (`pil secret rotate`) keeps the replaced secret for an overlap: the previous
/// webhook secret keeps verifying inbound events, triggers carry a signature with the
/// previous trigger secret too, and links signed with the previous link key still verify,
/// until the overlap ends. At most two of each are kept.
#[derive(Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct SealedSecrets {
    /// Inbound webhook secrets, newest first; two during a rotation overlap.
    pub webhook: Vec<String>,
    /// Until when `webhook[1..]` (the secret the last rotation replaced) verifies: refused
    /// from this instant on. `None` (a practice never rotated) accepts every listed secret.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub webhook_previous_until: Option<Timestamp>,
    pub trigger: String,
    /// The trigger secret the last rotation replaced, while triggers are still signed with it
    /// too.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub trigger_previous: Option<PreviousSecret>,
    /// Key for approval-link tokens (new links are signed with it).
    pub link: String,
    /// The link key the last rotation replaced, while links signed with it still verify.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub link_previous: Option<PreviousSecret>,
    /// Key for tombstone hashes of erased and rotated refs ([`crate::tombstone`]). Made at
    /// onboarding and never rotated (a new key would orphan every tombstone). `None` only for
    /// a practice stored before tombstones existed: `pil secret reseal` adds one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tombstone: Option<String>,
}

/// A replaced secret (sealed) and the end of its overlap (exclusive).
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PreviousSecret {
    pub sealed: String,
    pub until: Timestamp,
}

impl fmt::Debug for PreviousSecret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "PreviousSecret(<sealed>, until: {})", self.until)
    }
}

impl fmt::Debug for SealedSecrets {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "SealedSecrets(webhook: {}, previous until: {:?}, trigger previous until: {:?}, link previous until: {:?}, <sealed>)",
            self.webhook.len(),
            self.webhook_previous_until,
            self.trigger_previous.as_ref().map(|p| p.until),
            self.link_previous.as_ref().map(|p| p.until),
        )
    }
}

/// A practice's kinds of secret: which one `pil secret rotate` replaces, and the purpose a
/// sealed secret is bound to ([`SecretContext`](crate::ports::SecretContext)).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum SecretKind {
    /// Inbound: the PMS signs events with it.
    Webhook,
    /// Outbound: triggers are signed with it; the PMS verifies.
    Trigger,
    /// The key approval and settings links are signed with; it never leaves the layer.
    Link,
    /// The key tombstone ids are hashed with (the receiver). Never rotated: a new key would
    /// orphan every tombstone; `pil secret rotate` does not offer it.
    Tombstone,
}

impl SecretKind {
    pub const ALL: [Self; 4] = [Self::Webhook, Self::Trigger, Self::Link, Self::Tombstone];

    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "webhook" => Some(Self::Webhook),
            "trigger" => Some(Self::Trigger),
            "link" => Some(Self::Link),
            _ => None,
        }
    }
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Webhook => "webhook",
            Self::Trigger => "trigger",
            Self::Link => "link",
            Self::Tombstone => "tombstone",
        }
    }
}

/// What a rotation did to the stored secrets (no secret in it).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Rotated {
    /// The replaced secret works until this instant (exclusive); `now` for no overlap.
    pub old_valid_until: Timestamp,
    /// A secret from an earlier rotation that was still inside its overlap and is now
    /// dropped (at most two are kept): its end of overlap.
    pub cut_short: Option<Timestamp>,
}

impl SealedSecrets {
    /// The webhook secrets that verify an inbound delivery at `now`: the newest always; the
    /// one a rotation replaced only before its overlap ends.
    pub fn webhook_at(&self, now: Timestamp) -> &[String] {
        match self.webhook_previous_until {
            Some(until) if now >= until => &self.webhook[..self.webhook.len().min(1)],
            _ => &self.webhook,
        }
    }

    /// The trigger secrets a trigger sent at `now` is signed with: the current one, and the
    /// one a rotation replaced until its overlap ends (the PMS verifies with either).
    pub fn trigger_signers_at(&self, now: Timestamp) -> Vec<&str> {
        std::iter::once(self.trigger.as_str())
            .chain(
                self.trigger_previous
                    .as_ref()
                    .filter(|p| now < p.until)
                    .map(|p| p.sealed.as_str()),
            )
            .collect()
    }

    /// The link keys a link presented at `now` verifies with: the current one, and the one a
    /// rotation replaced until its overlap ends. New links are signed with the current one.
    pub fn link_keys_at(&self, now: Timestamp) -> Vec<&str> {
        std::iter::once(self.link.as_str())
            .chain(
                self.link_previous
                    .as_ref()
                    .filter(|p| now < p.until)
                    .map(|p| p.sealed.as_str()),
            )
            .collect()
    }

    /// The end of the running overlap of the `which` secret a rotation replaced, if any.
    pub fn overlap_running(&self, which: SecretKind, now: Timestamp) -> Option<Timestamp> {
        match which {
            SecretKind::Webhook => (self.webhook.len() > 1)
                .then_some(self.webhook_previous_until)
                .flatten(),
            SecretKind::Trigger => self.trigger_previous.as_ref().map(|p| p.until),
            SecretKind::Link => self.link_previous.as_ref().map(|p| p.until),
            SecretKind::Tombstone => None,
        }
        .filter(|until| *until > now)
    }

    /// Puts `new_sealed` in place of the current `which` secret. The current one is kept
    /// until `now + overlap` (not at all for a zero overlap); anything older is dropped.
    pub fn rotate(
        &mut self,
        which: SecretKind,
        new_sealed: String,
        now: Timestamp,
        overlap: jiff::SignedDuration,
    ) -> Rotated {
        let until = now + overlap.max(jiff::SignedDuration::ZERO);
        let keep = until > now;
        match which {
            // Never rotated (a new key would orphan every tombstone): nothing changes.
            SecretKind::Tombstone => Rotated {
                old_valid_until: now,
                cut_short: None,
            },
            SecretKind::Webhook => {
                let cut_short = (self.webhook.len() > 1)
                    .then_some(self.webhook_previous_until)
                    .flatten()
                    .filter(|u| *u > now);
                let old = std::mem::take(&mut self.webhook).into_iter().next();
                self.webhook = std::iter::once(new_sealed)
                    .chain(old.filter(|_| keep))
                    .collect();
                self.webhook_previous_until = (self.webhook.len() > 1).then_some(until);
                Rotated {
                    old_valid_until: if keep { until } else { now },
                    cut_short,
                }
            }
            SecretKind::Trigger | SecretKind::Link => {
                let (current, previous) = match which {
                    SecretKind::Trigger => (&mut self.trigger, &mut self.trigger_previous),
                    _ => (&mut self.link, &mut self.link_previous),
                };
                let cut_short = previous.as_ref().map(|p| p.until).filter(|u| *u > now);
                let old = std::mem::replace(current, new_sealed);
                *previous = keep.then_some(PreviousSecret { sealed: old, until });
                Rotated {
                    old_valid_until: if keep { until } else { now },
                    cut_short,
                }
            }
        }
    }
}

/// One practice's configuration.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Practice {
    pub id: PracticeId,
    /// IANA time zone name.
    pub time_zone: String,
    pub owner_emails: Vec<String>,
    /// Where triggers are POSTed. Read back under [`TriggerUrl::read_back`]: `None` when the
    /// stored URL breaks the rules (a record written before them, or edited by hand), and then
    /// no trigger is sent until `pil practice update --trigger-url` sets a valid one. The rest
    /// of the practice stays readable, so inbound events (opt-outs, erasures) still land.
    #[serde(
        default,
        deserialize_with = "TriggerUrl::read_back",
        skip_serializing_if = "Option::is_none"
    )]
    pub trigger_url: Option<TriggerUrl>,
    pub secrets: SealedSecrets,
    pub policy: Policy,
    #[serde(default)]
    pub cycle_days: BTreeMap<Treatment, u32>,
    #[serde(default)]
    pub avg_ticket: BTreeMap<Treatment, u32>,
    /// Follow-up interval overrides (days after the completion).
    #[serde(default)]
    pub follow_up_days: BTreeMap<Treatment, u32>,
    /// Per-kind overrides of how long a gap stays actionable past its due date
    /// ([`default_stale_after_days`]).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub stale_after_days: BTreeMap<ActionKind, u32>,
    /// Win-back after this many cycles without a visit (default 2).
    #[serde(default)]
    pub win_back_multiple: Option<u32>,
    #[serde(default)]
    pub disabled: bool,
    /// Set when the PMS answered 410: no triggers are sent until the URL is updated.
    #[serde(default)]
    pub endpoint_retired: bool,
    /// Who gets the daily PMS integration report on days the practice's PMS had deliveries
    /// refused (rules and field paths, never values): the practice's or its PMS vendor's
    /// technical contact. Empty: nobody.
    #[serde(default)]
    pub technical_contacts: Vec<String>,
    /// Last practice-local date the nightly scan ran for.
    #[serde(default)]
    pub last_scan_date: Option<Date>,
    /// Bumped on every write; writes are conditional on it.
    #[serde(default)]
    pub version: u64,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ConfigError {
    #[error("time_zone: not an IANA time zone name")]
    TimeZone,
    #[error("owner_email: not an e-mail address")]
    OwnerEmail,
    /// Names the rule the URL breaks ([`TriggerUrlError::rule`]), never the URL.
    #[error("trigger_url: {}", .0.rule())]
    TriggerUrl(TriggerUrlError),
}

impl From<TriggerUrlError> for ConfigError {
    fn from(e: TriggerUrlError) -> Self {
        Self::TriggerUrl(e)
    }
}

impl Practice {
    /// A new practice as onboarding makes it: the default policy and settings, enabled, no
    /// technical contact, never scanned, version 1.
    pub fn new(
        id: PracticeId,
        time_zone: String,
        owner_emails: Vec<String>,
        trigger_url: TriggerUrl,
        secrets: SealedSecrets,
    ) -> Self {
        Self {
            id,
            time_zone,
            owner_emails,
            trigger_url: Some(trigger_url),
            secrets,
            policy: Policy::default(),
            cycle_days: BTreeMap::new(),
            avg_ticket: BTreeMap::new(),
            follow_up_days: BTreeMap::new(),
            stale_after_days: BTreeMap::new(),
            win_back_multiple: None,
            disabled: false,
            endpoint_retired: false,
            technical_contacts: Vec::new(),
            last_scan_date: None,
            version: 1,
        }
    }

    pub fn tz(&self) -> TimeZone {
        TimeZone::get(&self.time_zone).unwrap_or(TimeZone::UTC)
    }

    pub fn cycle_days(&self, t: Treatment) -> Option<u32> {
        self.cycle_days
            .get(&t)
            .copied()
            .or_else(|| t.default_cycle_days())
    }

    /// Days past its due date a gap of `kind` stays actionable (override, else default).
    pub fn stale_after_days(&self, kind: ActionKind) -> Option<u32> {
        self.stale_after_days
            .get(&kind)
            .copied()
            .or_else(|| default_stale_after_days(kind))
    }

    pub fn follow_up_days(&self, t: Treatment) -> Option<u32> {
        self.follow_up_days
            .get(&t)
            .copied()
            .or_else(|| default_follow_up_days(t))
    }

    pub fn series_interval(&self, t: Treatment) -> Option<u32> {
        self.cycle_days
            .get(&t)
            .copied()
            .or_else(|| default_series_interval(t))
    }

    pub fn win_back_multiple(&self) -> u32 {
        self.win_back_multiple
            .unwrap_or(DEFAULT_WIN_BACK_MULTIPLE)
            .max(2)
    }

    pub fn avg_ticket(&self, t: Treatment) -> u32 {
        self.avg_ticket
            .get(&t)
            .copied()
            .unwrap_or_else(|| t.default_avg_ticket())
    }

    /// The practice-local calendar date of an instant.
    pub fn local_date(&self, at: jiff::Timestamp) -> Date {
        at.to_zoned(self.tz()).date()
    }
}

pub fn validate_time_zone(tz: &str) -> Result<(), ConfigError> {
    TimeZone::get(tz)
        .map(|_| ())
        .map_err(|_| ConfigError::TimeZone)
}

pub fn validate_email(e: &str) -> Result<(), ConfigError> {
    let ok = e.len() <= 254
        && e.split_once('@')
            .is_some_and(|(l, d)| !l.is_empty() && d.contains('.') && !d.starts_with('.'))
        && !e.contains(char::is_whitespace);
    if ok {
        Ok(())
    } else {
        Err(ConfigError::OwnerEmail)
    }
}

/// Which trigger URLs a process accepts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TriggerUrlScope {
    /// Deployed code: https to a public host only.
    Deployed,
    /// The local stack only: also loopback hosts, over http or https (its PMS simulator listens
    /// on `http://127.0.0.1:PORT`). Chosen by `PIL_ALLOW_LOOPBACK_HTTP=1`, which only the local
    /// stack and its benches set (`pil_aws::Config::trigger_url_scope`); the template never
    /// does.
    LocalStack,
}

/// Why a trigger URL was refused: a rule name, never the URL.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("{rule}")]
pub struct TriggerUrlError {
    rule: &'static str,
}

impl TriggerUrlError {
    const fn new(rule: &'static str) -> Self {
        Self { rule }
    }

    /// The rule, as errors and logs name it (`private_address`, `https_required`, …).
    pub fn rule(&self) -> &'static str {
        self.rule
    }
}

/// A practice's trigger endpoint: an absolute `https` URL whose host is a name or a public IP
/// address. It can only be made by [`TriggerUrl::parse`] (or `str::parse`, the deployed
/// rules), so holding one means the rules were checked:
///
/// - the scheme is `https` (`https_required`); the host is present (`missing_host`); there is
///   no user name or password (`userinfo`);
/// - an IP-literal host is none of: loopback, `localhost` (`loopback_address`); RFC 1918 or
///   the deprecated IPv6 site-local `fec0::/10` (`private_address`); `169.254/16`, `fe80::/10`
///   (`link_local_address`); `100.64/10` (`shared_address`, carrier-grade NAT); `fc00::/7`
///   (`unique_local_address`); multicast (`multicast_address`); `0/8`, `::`
///   (`unspecified_address`); `255.255.255.255` (`broadcast_address`); `240/4`, `192.0.0/24`,
///   `198.18/15` (`reserved_address`); the documentation ranges `192.0.2/24`, `198.51.100/24`,
///   `203.0.113/24`, `2001:db8::/32`, `3fff::/20` (`documentation_address`). An IPv6 address
///   that embeds an IPv4 one (IPv4-mapped `::ffff:a.b.c.d`, IPv4-compatible `::a.b.c.d`, NAT64
///   `64:ff9b::a.b.c.d`) is judged by the IPv4 address. The `url` crate reads hosts as
///   browsers do, so `https://2130706433/` or `https://0x7f.1/` are IP literals too.
///
/// A host *name* is not resolved here: what it resolves to when a trigger is sent is not
/// checked (the PMS's DNS is the PMS's).
#[derive(Clone, PartialEq, Eq)]
pub struct TriggerUrl(url::Url);

impl TriggerUrl {
    /// Parses and checks `s` under `scope`'s rules (see [`TriggerUrl`]).
    pub fn parse(s: &str, scope: TriggerUrlScope) -> Result<Self, TriggerUrlError> {
        let url = url::Url::parse(s.trim()).map_err(|e| match e {
            url::ParseError::EmptyHost => TriggerUrlError::new("missing_host"),
            _ => TriggerUrlError::new("url_syntax"),
        })?;
        let host = url.host();
        let loopback = host.as_ref().is_some_and(is_loopback_host);
        let local = scope == TriggerUrlScope::LocalStack && loopback;
        match url.scheme() {
            "https" => {}
            "http" if local => {}
            _ => return Err(TriggerUrlError::new("https_required")),
        }
        if !url.username().is_empty() || url.password().is_some() {
            return Err(TriggerUrlError::new("userinfo"));
        }
        let refused = match host {
            None => Some("missing_host"),
            Some(url::Host::Domain("")) => Some("missing_host"),
            Some(_) if local => None,
            Some(url::Host::Domain(_)) => loopback.then_some("loopback_address"),
            Some(url::Host::Ipv4(ip)) => ipv4_rule(ip),
            Some(url::Host::Ipv6(ip)) => ipv6_rule(ip),
        };
        match refused {
            Some(rule) => Err(TriggerUrlError::new(rule)),
            None => Ok(Self(url)),
        }
    }

    pub fn as_str(&self) -> &str {
        self.0.as_str()
    }

    /// How a stored practice's URL is read: under the local stack's rules (the widest any
    /// writer applies; a deployed trigger transport still refuses what deployed rules refuse),
    /// and `None` instead of an error for a URL that breaks them, so the practice stays
    /// readable.
    pub fn read_back<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Option<Self>, D::Error> {
        let stored = Option::<String>::deserialize(d)?;
        Ok(stored.and_then(|s| Self::parse(&s, TriggerUrlScope::LocalStack).ok()))
    }
}

/// The deployed rules ([`TriggerUrlScope::Deployed`]).
impl std::str::FromStr for TriggerUrl {
    type Err = TriggerUrlError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Self::parse(s, TriggerUrlScope::Deployed)
    }
}

impl fmt::Display for TriggerUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl fmt::Debug for TriggerUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "TriggerUrl({})", self.as_str())
    }
}

impl Serialize for TriggerUrl {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(self.as_str())
    }
}

fn is_loopback_host(host: &url::Host<&str>) -> bool {
    match host {
        url::Host::Ipv4(ip) => ip.is_loopback(),
        url::Host::Ipv6(ip) => {
            ip.is_loopback() || embedded_ipv4(*ip).is_some_and(|v4| v4.is_loopback())
        }
        // RFC 6761: `localhost` and every name under it are loopback.
        url::Host::Domain(d) => {
            let d = d.trim_end_matches('.').to_ascii_lowercase();
            d == "localhost" || d.ends_with(".localhost")
        }
    }
}

/// Which rule an IPv4 host breaks, if any.
fn ipv4_rule(ip: Ipv4Addr) -> Option<&'static str> {
    let [a, b, c, _] = ip.octets();
    Some(if ip.is_loopback() {
        "loopback_address"
    } else if ip.is_private() {
        "private_address"
    } else if ip.is_link_local() {
        "link_local_address"
    } else if a == 100 && (b & 0xc0) == 64 {
        "shared_address"
    } else if ip.is_multicast() {
        "multicast_address"
    } else if a == 0 {
        "unspecified_address"
    } else if ip.is_broadcast() {
        "broadcast_address"
    } else if ip.is_documentation() {
        "documentation_address"
    } else if a >= 240 || (a, b, c) == (192, 0, 0) || (a == 198 && (b & 0xfe) == 18) {
        "reserved_address"
    } else {
        return None;
    })
}

/// Which rule an IPv6 host breaks, if any.
fn ipv6_rule(ip: Ipv6Addr) -> Option<&'static str> {
    let s = ip.segments();
    if ip.is_loopback() {
        return Some("loopback_address");
    }
    if ip.is_unspecified() {
        return Some("unspecified_address");
    }
    if let Some(v4) = embedded_ipv4(ip) {
        return ipv4_rule(v4);
    }
    Some(if ip.is_multicast() {
        "multicast_address"
    } else if ip.is_unicast_link_local() {
        "link_local_address"
    } else if ip.is_unique_local() {
        "unique_local_address"
    } else if (s[0] & 0xffc0) == 0xfec0 {
        "private_address"
    } else if (s[0], s[1]) == (0x2001, 0x0db8) || (s[0] & 0xfff0) == 0x3ff0 {
        "documentation_address"
    } else {
        return None;
    })
}

/// The IPv4 address an IPv6 one stands for: IPv4-mapped (`::ffff:a.b.c.d`), IPv4-compatible
/// (`::a.b.c.d`, deprecated but still routed by some stacks) and NAT64 (`64:ff9b::a.b.c.d`).
fn embedded_ipv4(ip: Ipv6Addr) -> Option<Ipv4Addr> {
    let s = ip.segments();
    let nat64 = s[..6] == [0x64, 0xff9b, 0, 0, 0, 0];
    if nat64 {
        let [.., a, b, c, d] = ip.octets();
        return Some(Ipv4Addr::new(a, b, c, d));
    }
    ip.to_ipv4()
}

/// Default win-back: no visit for this many cycles.
pub const DEFAULT_WIN_BACK_MULTIPLE: u32 = 2;

/// How many days after its due date a gap of `kind` is still worth acting on, by default
/// (docs/contracts.md, Windows). Past that the gap is stale: settled as suppressed with
/// reason `stale`, never sent. `None`: no window of its own.
///
/// - follow-up: 7 days. A "two-week check-in" three weeks late reads as a form letter.
/// - no-show recovery: 12 days, so 14 days after the missed appointment (recovery is due two
///   days after it). Later, the patient has moved on or rebooked elsewhere.
/// - win-back: 180 days. Someone lapsed for two cycles and then half a year more is not won
///   back by one message; a history import would otherwise mail every patient ever seen.
/// - rebook and series continuation: none. They stay actionable until the win-back (due at
///   two cycles) takes over by precedence.
/// - slot offers live as long as their slot; they are not scanned.
pub fn default_stale_after_days(kind: ActionKind) -> Option<u32> {
    match kind {
        ActionKind::FollowUp => Some(7),
        ActionKind::NoShowRecovery => Some(12),
        ActionKind::WinBack => Some(180),
        ActionKind::RebookNudge | ActionKind::SeriesContinue | ActionKind::SlotOffer => None,
    }
}

/// Default follow-up interval after a completion (docs/design.md §4.1).
pub fn default_follow_up_days(t: Treatment) -> Option<u32> {
    matches!(t, Treatment::Neurotoxin | Treatment::DermalFiller).then_some(14)
}

/// Default interval between sessions of a series (docs/design.md §4.1): the cycle otherwise.
pub fn default_series_interval(t: Treatment) -> Option<u32> {
    match t {
        Treatment::LaserHairRemoval => Some(42),
        Treatment::LaserResurfacing => Some(35),
        other => other.default_cycle_days(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(tz: &TimeZone, s: &str) -> jiff::Timestamp {
        s.parse::<jiff::civil::DateTime>()
            .unwrap()
            .to_zoned(tz.clone())
            .unwrap()
            .timestamp()
    }

    #[test]
    fn quiet_hours_defer_to_their_local_end_across_midnight_and_dst() {
        let tz = TimeZone::get("America/New_York").unwrap();
        let p = Policy::default(); // 20:00-08:00
        assert_eq!(p.quiet_until(&tz, at(&tz, "2026-11-23T12:00")), None);
        assert_eq!(p.quiet_until(&tz, at(&tz, "2026-11-23T19:59:59")), None);
        assert_eq!(
            p.quiet_until(&tz, at(&tz, "2026-11-23T20:00")),
            Some(at(&tz, "2026-11-24T08:00"))
        );
        assert_eq!(
            p.quiet_until(&tz, at(&tz, "2026-11-24T07:30")),
            Some(at(&tz, "2026-11-24T08:00"))
        );
        assert_eq!(p.quiet_until(&tz, at(&tz, "2026-11-24T08:00")), None);
        // Fall back (Nov 1, 2026): the night is 13 hours long, still ends at 08:00 local.
        let end = p.quiet_until(&tz, at(&tz, "2026-10-31T21:00")).unwrap();
        assert_eq!(end, at(&tz, "2026-11-01T08:00"));
        assert_eq!(
            end.duration_since(at(&tz, "2026-10-31T21:00")).as_hours(),
            12
        );
        // Spring forward (Mar 8, 2026): 02:00-03:00 does not exist; the end is still 08:00.
        let end = p.quiet_until(&tz, at(&tz, "2026-03-08T01:30")).unwrap();
        assert_eq!(end, at(&tz, "2026-03-08T08:00"));
        // A window inside one day, and none.
        let day = Policy {
            quiet_hours: Some((12, 14)),
            ..Policy::default()
        };
        assert_eq!(
            day.quiet_until(&tz, at(&tz, "2026-11-23T13:00")),
            Some(at(&tz, "2026-11-23T14:00"))
        );
        assert_eq!(day.quiet_until(&tz, at(&tz, "2026-11-23T14:00")), None);
        let none = Policy {
            quiet_hours: None,
            ..Policy::default()
        };
        assert_eq!(none.quiet_until(&tz, at(&tz, "2026-11-23T23:00")), None);
    }

    fn sealed() -> SealedSecrets {
        SealedSecrets {
            webhook: vec!["A".into()],
            trigger: "T1".into(),
            link: "L".into(),
            tombstone: None,
            ..SealedSecrets::default()
        }
    }

    #[test]
    fn webhook_rotation_keeps_the_replaced_secret_for_the_overlap_and_at_most_two() {
        let now: jiff::Timestamp = "2026-11-23T17:00:00Z".parse().unwrap();
        let h72 = jiff::SignedDuration::from_hours(72);
        let mut s = sealed();
        let r = s.rotate(SecretKind::Webhook, "B".into(), now, h72);
        assert_eq!(s.webhook, ["B", "A"]);
        assert_eq!(s.webhook_previous_until, Some(now + h72));
        assert_eq!(r.old_valid_until, now + h72);
        assert_eq!(r.cut_short, None);
        // A second rotation inside the overlap drops A (and says until when it was valid).
        let later = now + jiff::SignedDuration::from_hours(1);
        let r = s.rotate(SecretKind::Webhook, "C".into(), later, h72);
        assert_eq!(s.webhook, ["C", "B"]);
        assert_eq!(r.cut_short, Some(now + h72));
        assert_eq!(s.webhook_previous_until, Some(later + h72));
        // After the overlap: the one dropped was refused already, nothing is cut short.
        let much_later = later + jiff::SignedDuration::from_hours(100);
        let r = s.rotate(SecretKind::Webhook, "D".into(), much_later, h72);
        assert_eq!(
            (s.webhook.as_slice(), r.cut_short),
            (&["D".to_owned(), "C".to_owned()][..], None)
        );
        // No overlap: only the new one is kept, the old one is over now.
        let r = s.rotate(
            SecretKind::Webhook,
            "E".into(),
            much_later,
            jiff::SignedDuration::ZERO,
        );
        assert_eq!(s.webhook, ["E"]);
        assert_eq!(s.webhook_previous_until, None);
        assert_eq!(r.old_valid_until, much_later);
        // Trigger and link untouched.
        assert_eq!((s.trigger.as_str(), s.link.as_str()), ("T1", "L"));
    }

    #[test]
    fn trigger_rotation_keeps_the_replaced_secret_for_the_overlap() {
        let now: jiff::Timestamp = "2026-11-23T17:00:00Z".parse().unwrap();
        let h = jiff::SignedDuration::from_hours(24);
        let mut s = sealed();
        let r = s.rotate(SecretKind::Trigger, "T2".into(), now, h);
        assert_eq!(s.trigger, "T2");
        assert_eq!(
            s.trigger_previous,
            Some(PreviousSecret {
                sealed: "T1".into(),
                until: now + h
            })
        );
        assert_eq!((r.old_valid_until, r.cut_short), (now + h, None));
        assert_eq!(s.webhook, ["A"], "webhook secrets untouched");
        let r = s.rotate(
            SecretKind::Trigger,
            "T3".into(),
            now,
            jiff::SignedDuration::ZERO,
        );
        assert_eq!((s.trigger.as_str(), &s.trigger_previous), ("T3", &None));
        assert_eq!((r.old_valid_until, r.cut_short), (now, Some(now + h)));
        // The sealed forms stay out of Debug.
        let dbg = format!("{s:?}");
        assert!(!dbg.contains("T3") && !dbg.contains("\"A\""), "{dbg}");
    }

    #[test]
    fn link_rotation_keeps_the_replaced_key_for_the_overlap_and_only_for_verifying() {
        let now: jiff::Timestamp = "2026-11-23T17:00:00Z".parse().unwrap();
        let h = jiff::SignedDuration::from_hours(2);
        let mut s = sealed();
        assert_eq!(s.link_keys_at(now), ["L"]);
        let r = s.rotate(SecretKind::Link, "L2".into(), now, h);
        assert_eq!((s.link.as_str(), r.old_valid_until), ("L2", now + h));
        assert_eq!(s.link_keys_at(now), ["L2", "L"], "the new key first");
        assert_eq!(
            s.link_keys_at(now + h),
            ["L2"],
            "the old one ends with the overlap"
        );
        assert_eq!(s.overlap_running(SecretKind::Link, now), Some(now + h));
        assert_eq!(s.overlap_running(SecretKind::Link, now + h), None);
        assert_eq!(s.overlap_running(SecretKind::Trigger, now), None);
        // No overlap: the old key is dropped at once (and the running overlap cut short).
        let r = s.rotate(
            SecretKind::Link,
            "L3".into(),
            now,
            jiff::SignedDuration::ZERO,
        );
        assert_eq!(
            (s.link_keys_at(now), r.cut_short),
            (vec!["L3"], Some(now + h))
        );
        assert_eq!(s.link_previous, None);
        assert_eq!(
            (s.webhook.as_slice(), s.trigger.as_str()),
            (&["A".to_owned()][..], "T1")
        );
        assert_eq!(SecretKind::parse("link"), Some(SecretKind::Link));
    }

    #[test]
    fn a_record_written_before_rotation_existed_still_reads() {
        let old = r#"{"webhook":["A","B"],"trigger":"T","link":"L"}"#;
        let s: SealedSecrets = serde_json::from_str(old).unwrap();
        assert_eq!(
            (s.webhook_previous_until, &s.trigger_previous),
            (None, &None)
        );
        // And a never-rotated record is written as before.
        assert_eq!(serde_json::to_string(&s).unwrap(), old);
    }

    fn refused(u: &str, scope: TriggerUrlScope) -> Option<&'static str> {
        TriggerUrl::parse(u, scope).err().map(|e| e.rule())
    }

    #[test]
    fn trigger_urls_refuse_each_unsafe_form_by_rule() {
        let cases = [
            // Not https, no host, credentials.
            ("http://pms.example.com/t", "https_required"),
            ("ftp://pms.example.com/t", "https_required"),
            ("file:///etc/passwd", "https_required"),
            ("pms.example.com/t", "url_syntax"),
            ("https://", "missing_host"),
            ("https://user:pass@pms.example.com/t", "userinfo"),
            ("https://user@pms.example.com/t", "userinfo"),
            // Loopback, also as a name and in the forms browsers read as IPv4.
            ("https://127.0.0.1/t", "loopback_address"),
            ("https://127.1.2.3:8443/t", "loopback_address"),
            ("https://2130706433/t", "loopback_address"),
            ("https://0x7f.1/t", "loopback_address"),
            ("https://localhost/t", "loopback_address"),
            ("https://LocalHost./t", "loopback_address"),
            ("https://pms.localhost/t", "loopback_address"),
            ("https://[::1]/t", "loopback_address"),
            // Private, link-local (the instance metadata service), shared, multicast.
            ("https://10.1.2.3/t", "private_address"),
            ("https://172.16.0.1/t", "private_address"),
            ("https://172.31.255.255/t", "private_address"),
            ("https://192.168.0.10/t", "private_address"),
            ("https://[fec0::1]/t", "private_address"),
            (
                "https://169.254.169.254/latest/meta-data/",
                "link_local_address",
            ),
            ("https://[fe80::1]/t", "link_local_address"),
            ("https://100.64.0.1/t", "shared_address"),
            ("https://100.127.255.254/t", "shared_address"),
            ("https://[fd00:ec2::254]/t", "unique_local_address"),
            ("https://[fc00::1]/t", "unique_local_address"),
            ("https://224.0.0.1/t", "multicast_address"),
            ("https://[ff02::1]/t", "multicast_address"),
            ("https://0.0.0.0/t", "unspecified_address"),
            ("https://0.1.2.3/t", "unspecified_address"),
            ("https://[::]/t", "unspecified_address"),
            ("https://255.255.255.255/t", "broadcast_address"),
            ("https://240.0.0.1/t", "reserved_address"),
            ("https://198.18.0.1/t", "reserved_address"),
            ("https://192.0.0.8/t", "reserved_address"),
            ("https://192.0.2.1/t", "documentation_address"),
            ("https://198.51.100.7/t", "documentation_address"),
            ("https://203.0.113.9/t", "documentation_address"),
            ("https://[2001:db8::1]/t", "documentation_address"),
            ("https://[3fff::1]/t", "documentation_address"),
            // IPv6 forms of IPv4 addresses are judged by the IPv4 address.
            ("https://[::ffff:169.254.169.254]/t", "link_local_address"),
            ("https://[::ffff:a9fe:a9fe]/t", "link_local_address"),
            ("https://[::ffff:127.0.0.1]/t", "loopback_address"),
            ("https://[::ffff:10.0.0.1]/t", "private_address"),
            ("https://[::ffff:100.64.1.1]/t", "shared_address"),
            ("https://[::169.254.169.254]/t", "link_local_address"),
            ("https://[::192.168.1.1]/t", "private_address"),
            ("https://[64:ff9b::169.254.169.254]/t", "link_local_address"),
            ("https://[64:ff9b::10.0.0.1]/t", "private_address"),
        ];
        for (u, rule) in cases {
            assert_eq!(refused(u, TriggerUrlScope::Deployed), Some(rule), "{u}");
        }
        // The local stack's switch allows loopback only: every other rule still holds.
        for (u, rule) in cases {
            let local = refused(u, TriggerUrlScope::LocalStack);
            if rule == "loopback_address" {
                assert_eq!(local, None, "{u}");
            } else {
                assert_eq!(local, Some(rule), "{u}");
            }
        }
    }

    #[test]
    fn trigger_urls_accept_public_hosts_and_loopback_http_only_locally() {
        for u in [
            "https://pms.example.com/hooks",
            "https://pms.example.com:8443/pil/triggers?tenant=7",
            "https://93.184.215.14/t",
            "https://8.8.8.8/t",
            "https://[2606:4700:4700::1111]/t",
            "https://[::ffff:93.184.215.14]/t",
            "https://[64:ff9b::8.8.8.8]/t",
            "https://100.128.0.1/t",
            "https://172.32.0.1/t",
            // A name is not resolved here, whatever it looks like.
            "https://10.0.0.1.nip.io/t",
        ] {
            let url: TriggerUrl = u.parse().unwrap_or_else(|e| panic!("{u}: {e}"));
            assert_eq!(
                TriggerUrl::parse(url.as_str(), TriggerUrlScope::Deployed),
                Ok(url)
            );
        }
        for u in [
            "http://127.0.0.1:4000/t",
            "http://[::1]:4000/t",
            "http://localhost:4000/t",
            "https://127.0.0.1:4000/t",
        ] {
            assert_eq!(refused(u, TriggerUrlScope::LocalStack), None, "{u}");
            assert!(refused(u, TriggerUrlScope::Deployed).is_some(), "{u}");
        }
        assert_eq!(
            refused("http://pms.example.com/hooks", TriggerUrlScope::LocalStack),
            Some("https_required")
        );
        assert_eq!(
            refused("http://10.0.0.1/t", TriggerUrlScope::LocalStack),
            Some("https_required")
        );
    }

    #[test]
    fn a_refused_trigger_url_is_named_by_rule_never_by_value() {
        let e = ConfigError::from(
            "https://user:hunter2@10.9.8.7/t"
                .parse::<TriggerUrl>()
                .unwrap_err(),
        );
        assert_eq!(e.to_string(), "trigger_url: userinfo");
        let e = ConfigError::from("https://10.9.8.7/t".parse::<TriggerUrl>().unwrap_err());
        assert_eq!(e.to_string(), "trigger_url: private_address");
    }

    #[test]
    fn a_stored_trigger_url_is_read_back_under_the_rules() {
        #[derive(Deserialize)]
        struct Doc {
            #[serde(default, deserialize_with = "TriggerUrl::read_back")]
            trigger_url: Option<TriggerUrl>,
        }
        let read = |j: &str| serde_json::from_str::<Doc>(j).unwrap().trigger_url;
        assert_eq!(
            read(r#"{"trigger_url":"https://pms.example.com/t"}"#),
            Some("https://pms.example.com/t".parse().unwrap())
        );
        // Written by the local stack.
        assert!(read(r#"{"trigger_url":"http://127.0.0.1:3100/triggers"}"#).is_some());
        // Written before the rules, or by hand: refused, and the record still reads.
        assert_eq!(
            read(r#"{"trigger_url":"https://169.254.169.254/latest"}"#),
            None
        );
        assert_eq!(read(r#"{"trigger_url":"http://pms.example.com/t"}"#), None);
        assert_eq!(read("{}"), None);
    }

    #[test]
    fn default_policy_needs_approval_for_everything() {
        let p = Policy::default();
        assert!(
            ActionKind::ALL
                .iter()
                .all(|k| p.for_kind(*k).mode == Mode::Approve)
        );
    }

    #[test]
    fn time_zone_and_email_checks() {
        assert!(validate_time_zone("America/New_York").is_ok());
        assert!(validate_time_zone("Mars/Base").is_err());
        assert!(validate_email("owner@clinic.example").is_ok());
        assert!(validate_email("owner").is_err());
    }
}
