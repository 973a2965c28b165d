//! Practice configuration and the owner's policy (DESIGN §4.4).

use std::collections::BTreeMap;
use std::fmt;

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

/// The whole policy. `Policy::default()` is "everything needs approval" (DESIGN §2.5).
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
    /// Slot fill offers an opened slot to this many due patients (DESIGN §5, K).
    #[serde(default = "default_slot_fill_k")]
    pub slot_fill_k: u32,
}

fn default_slot_fill_k() -> u32 {
    3
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

/// Secrets as stored: sealed (KMS ciphertext, base64). Opening them needs the key service.
///
/// Rotation (`pil secret rotate`) keeps the replaced secret for an overlap: the previous
/// webhook secret keeps verifying inbound events, and triggers carry a signature with the
/// previous trigger secret too, until the overlap ends. At most two of each are kept.
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
    /// Key for approval-link tokens.
    pub link: String,
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
            "SealedSecrets(webhook: {}, previous until: {:?}, trigger previous until: {:?}, <sealed>)",
            self.webhook.len(),
            self.webhook_previous_until,
            self.trigger_previous.as_ref().map(|p| p.until),
        )
    }
}

/// Which secret `pil secret rotate` replaces.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum SecretKind {
    /// Inbound: the PMS signs events with it.
    Webhook,
    /// Outbound: triggers are signed with it; the PMS verifies.
    Trigger,
}

impl SecretKind {
    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "webhook" => Some(Self::Webhook),
            "trigger" => Some(Self::Trigger),
            _ => None,
        }
    }
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Webhook => "webhook",
            Self::Trigger => "trigger",
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
            SecretKind::Trigger => {
                let cut_short = self
                    .trigger_previous
                    .as_ref()
                    .map(|p| p.until)
                    .filter(|u| *u > now);
                let old = std::mem::replace(&mut self.trigger, new_sealed);
                self.trigger_previous = keep.then_some(PreviousSecret { sealed: old, until });
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
    pub trigger_url: String,
    pub secrets: SealedSecrets,
    pub policy: Policy,
    #[serde(default)]
    pub cycle_days: BTreeMap<Treatment, u32>,
    #[serde(default)]
    pub avg_ticket: BTreeMap<Treatment, u32>,
    /// Follow-up interval overrides (days after the completion).
    #[serde(default)]
    pub follow_up_days: BTreeMap<Treatment, u32>,
    /// Win-back after this many cycles without a visit (default 2).
    #[serde(default)]
    pub win_back_multiple: Option<u32>,
    #[serde(default)]
    pub disabled: bool,
    /// Set when the PMS answered 410: no triggers are sent until the URL is updated.
    #[serde(default)]
    pub endpoint_retired: bool,
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
    #[error("trigger_url: must be https (http only for loopback in the local stack)")]
    TriggerUrl,
}

impl Practice {
    pub fn tz(&self) -> TimeZone {
        TimeZone::get(&self.time_zone).unwrap_or(TimeZone::UTC)
    }

    pub fn cycle_days(&self, t: Treatment) -> Option<u32> {
        self.cycle_days
            .get(&t)
            .copied()
            .or_else(|| t.default_cycle_days())
    }

    pub fn follow_up_days(&self, t: Treatment) -> Option<u32> {
        self.follow_up_days
            .get(&t)
            .copied()
            .or_else(|| crate::rules::default_follow_up_days(t))
    }

    pub fn series_interval(&self, t: Treatment) -> Option<u32> {
        self.cycle_days
            .get(&t)
            .copied()
            .or_else(|| crate::rules::default_series_interval(t))
    }

    pub fn win_back_multiple(&self) -> u32 {
        self.win_back_multiple
            .unwrap_or(crate::rules::DEFAULT_WIN_BACK_MULTIPLE)
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

/// Trigger URLs are https. Plain http is allowed only to a loopback host and only when the
/// caller says loopback is allowed (the local stack).
pub fn validate_trigger_url(u: &str, allow_loopback_http: bool) -> Result<(), ConfigError> {
    let url = url::Url::parse(u).map_err(|_| ConfigError::TriggerUrl)?;
    match url.scheme() {
        "https" if url.host().is_some() => Ok(()),
        "http" if allow_loopback_http && is_loopback(&url) => Ok(()),
        _ => Err(ConfigError::TriggerUrl),
    }
}

fn is_loopback(url: &url::Url) -> bool {
    match url.host() {
        Some(url::Host::Ipv4(ip)) => ip.is_loopback(),
        Some(url::Host::Ipv6(ip)) => ip.is_loopback(),
        Some(url::Host::Domain(d)) => d == "localhost",
        None => false,
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

    #[test]
    fn trigger_urls_are_https_except_loopback_locally() {
        assert!(validate_trigger_url("https://pms.example.com/hooks", false).is_ok());
        assert!(validate_trigger_url("http://pms.example.com/hooks", true).is_err());
        assert!(validate_trigger_url("http://127.0.0.1:4000/t", true).is_ok());
        assert!(validate_trigger_url("http://127.0.0.1:4000/t", false).is_err());
        assert!(validate_trigger_url("ftp://x", true).is_err());
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
