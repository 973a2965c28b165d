//! Correctness under disorder (out-of-order delivery is normal: docs/contracts.md, Ordering;
//! the same gap gets the same id: docs/design.md §4.1), as properties over generated practice
//! histories.
//!
//! A history is a few patients × treatments: completions (days ago, some in a series, some
//! with a cycle override), bookings with reschedules, cancellations and no-shows, opt-outs and
//! opt-ins, slots reported open (`slot.opened`, once or twice), and for some patients a ref
//! rotation (their events then name the old ref or the new one), an erasure, or both (the
//! erasure naming either ref): every event type of the contract. Each event has its own
//! `occurred_at`, some of them up to 23 hours ahead of the receiver's clock (a PMS clock
//! running fast: they rank at their receipt, and tie there with each other and with events
//! stamped at that instant). It is delivered through the receiver service (signed JSON
//! bodies, as the PMS sends them) in a random order, with random duplicates, split into random
//! batches (so a rotation or an erasure shares a batch with other events), and ends with up to
//! three late retries (earlier events delivered again after everything else, so after any
//! erasure or rotation of their ref); then the nightly scan runs for the scan date (and, in
//! some cases, for the one or two nights before it first), then slot fill for every slot the
//! deliveries opened and its withdrawal for every slot a booking took. The practice's policy
//! varies (each kind's mode, the cooldown, the monthly cap). Everything runs against the
//! in-memory ports of `shared::testing`.
//!
//! 1. Any two deliveries of the same history give the same stored records and the same
//!    actions, scan reports, slot fill reports and hand-overs; nothing stored names an erased
//!    or rotated-away ref, or an appointment erasure took.
//! 2. A re-run of the scans adds nothing and writes nothing, also after the history is
//!    delivered again.
//! 3. The same gap gets the same action id in independent runs (fresh stores, other arrival
//!    orders, another clock, a later scan date), and different gaps different ids.
//!
//! `the_histories_reach_every_kind_of_disorder` checks that the generator produces these
//! cases (every event type, late retries after an erasure or rotation, mixed batches, slot
//! fill making offers) often enough to matter.
//!
//! An appointment's start minute is compared as kept (not its register's time), and its version
//! is not compared (a forget may cost a write in one order and not in another); the tests at
//! the end pin down the arrival-order bugs the minute had (fixed), and two orders the system
//! still gets wrong (expected to fail, each saying why).

use std::collections::{BTreeMap, BTreeSet};

use jiff::civil::Date;
use jiff::{SignedDuration, Timestamp};
use proptest::prelude::*;
use proptest::sample::Index;
use proptest::test_runner::FileFailurePersistence;
use serde_json::{Value, json};
use shared::action::{Action, ActionKind};
use shared::ids::{OpaqueRef, PracticeId};
use shared::ports::{CandidateBatch, Clock, DomainEvent, PracticeRepo};
use shared::practice::{Mode, Policy};
use shared::service::admin::{self, NewPractice};
use shared::service::receiver::{self, Accepted, Delivery};
use shared::service::scan::{self, ScanReport};
use shared::service::slots::{self, SlotReport};
use shared::signature::{SignedHeaders, WebhookSecret};
use shared::state::Entity;
use shared::testing::{EntityRow, World};
use shared::treatment::Treatment;

const PRACTICE: &str = "disorder-clinic";
/// 03:30 in New York on 2026-11-21: the night of the 21st's scan.
const NOW: &str = "2026-11-21T08:30:00Z";
const SCAN_DAY: &str = "2026-11-21";

/// Four patients' refs, then the ref each of them may be rotated to (`PATIENTS[p + 4]`).
const PATIENTS: [&str; 8] = [
    "p_7Hq2kX9mZ4rT1vB8yW3n",
    "p_Q2w8ErT5yU1iO3pA6sDf",
    "p_Oth5Tr6yU2iO8pA3sD7",
    "p_New3Lk8sD2fG6hJ4qW9",
    "p_Rk4Vw9Zt2Hm7Qc5Xb8Ld",
    "p_Gy6Pn3Jf8Ws1Kv4Tz7Mq",
    "p_Bx2Ld7Hs5Rq9Wm3Nc6Fv",
    "p_Tz8Cm4Yk1Pd6Gb9Vr3Hw",
];
/// How many patients a history has at most (each under one or two refs).
const PEOPLE: usize = 4;
/// Two appointments per patient at most.
const APPOINTMENTS: [&str; 8] = [
    "appt_K3j9Hg2Fd8Sa7Lk4",
    "appt_Ab3Cd4Ef5Gh6Jk7",
    "appt_Zy9Xw8Vu7Ts6Rq5",
    "appt_Mn4Bv7Cx2Zl9Kj3",
    "appt_Qw2Er8Ty4Ui6Op1",
    "appt_As5Df3Gh9Jk2Lz7",
    "appt_Pl7Ok3Ij9Uh2Yg5",
    "appt_Tf6Rd2Es8Wa4Qz1",
];
/// The visits completions refer to (not stored: completions key on patient × treatment).
const VISITS: [&str; 3] = [
    "appt_Vs1Tq8Wr3Ey6Ru2",
    "appt_Vs4Tm7Wn2Eb5Rc9",
    "appt_Vs6Tk3Wj8Eh1Rg4",
];
const PROVIDERS: [&str; 2] = ["prov_Dr4Xk9Qm2Lp7", "prov_Nu8Wz3Tb6Yc1"];
/// Slots the PMS reports open (`slot.opened`).
const SLOTS: [&str; 3] = [
    "slot_Zx3Vb7Nm1Qw9Er5T",
    "slot_Hj8Kl2Mn6Bv4Cx1R",
    "slot_Wq5Er9Ty3Ui7Op2A",
];
/// Treatments with a follow-up, a series interval, short and long cycles, and none.
const TREATMENTS: [Treatment; 7] = [
    Treatment::Neurotoxin,
    Treatment::DermalFiller,
    Treatment::LaserHairRemoval,
    Treatment::ChemicalPeel,
    Treatment::Facial,
    Treatment::HormoneTherapy,
    Treatment::Consultation,
];

fn now() -> Timestamp {
    NOW.parse().unwrap()
}
fn scan_day() -> Date {
    SCAN_DAY.parse().unwrap()
}
fn pid() -> PracticeId {
    PracticeId::parse(PRACTICE).unwrap()
}
fn hours_before_now(h: i64) -> Timestamp {
    now() - SignedDuration::from_hours(h)
}

/// One inbound event, by index into the ref tables.
#[derive(Debug, Clone, PartialEq)]
enum Ev {
    Completed {
        visit: usize,
        patient: usize,
        treatment: Treatment,
        series: Option<(u16, u16)>,
        cycle_days: Option<u16>,
        at: Timestamp,
    },
    Booked {
        appt: usize,
        patient: usize,
        treatment: Treatment,
        provider: usize,
        starts_at: Timestamp,
        duration_min: u16,
        at: Timestamp,
    },
    Rescheduled {
        appt: usize,
        starts_at: Timestamp,
        duration_min: u16,
        at: Timestamp,
    },
    Cancelled {
        appt: usize,
        reopens_slot: bool,
        at: Timestamp,
    },
    NoShow {
        appt: usize,
        at: Timestamp,
    },
    Consent {
        patient: usize,
        opted_out: bool,
        at: Timestamp,
    },
    /// A slot's fields are the same in every report of it; only `occurred_at` differs.
    SlotOpened {
        slot: usize,
        provider: usize,
        starts_at: Timestamp,
        duration_min: u16,
        treatments: Vec<Treatment>,
        at: Timestamp,
    },
    /// `PATIENTS[patient]` becomes `PATIENTS[patient + PEOPLE]`.
    Rotated {
        patient: usize,
        at: Timestamp,
    },
    /// `patient` indexes [`PATIENTS`]: a patient's first ref or the one it was rotated to.
    Erased {
        patient: usize,
        at: Timestamp,
    },
}

impl Ev {
    fn json(&self) -> Value {
        let (ty, at, data) = match self {
            Ev::Completed {
                visit,
                patient,
                treatment,
                series,
                cycle_days,
                at,
            } => {
                let mut d = json!({
                    "appointment_ref": VISITS[*visit],
                    "patient_ref": PATIENTS[*patient],
                    "treatment": treatment.as_str(),
                });
                if let Some((index, of)) = series {
                    d["series"] = json!({"index": index, "of": of});
                }
                if let Some(c) = cycle_days {
                    d["cycle_days"] = json!(c);
                }
                ("appointment.completed", at, d)
            }
            Ev::Booked {
                appt,
                patient,
                treatment,
                provider,
                starts_at,
                duration_min,
                at,
            } => (
                "appointment.booked",
                at,
                json!({
                    "appointment_ref": APPOINTMENTS[*appt],
                    "patient_ref": PATIENTS[*patient],
                    "treatment": treatment.as_str(),
                    "provider_ref": PROVIDERS[*provider],
                    "starts_at": starts_at.to_string(),
                    "duration_min": duration_min,
                }),
            ),
            Ev::Rescheduled {
                appt,
                starts_at,
                duration_min,
                at,
            } => (
                "appointment.rescheduled",
                at,
                json!({
                    "appointment_ref": APPOINTMENTS[*appt],
                    "starts_at": starts_at.to_string(),
                    "duration_min": duration_min,
                }),
            ),
            Ev::Cancelled {
                appt,
                reopens_slot,
                at,
            } => (
                "appointment.cancelled",
                at,
                json!({"appointment_ref": APPOINTMENTS[*appt], "reopens_slot": reopens_slot}),
            ),
            Ev::NoShow { appt, at } => (
                "appointment.no_show",
                at,
                json!({"appointment_ref": APPOINTMENTS[*appt]}),
            ),
            Ev::Consent {
                patient,
                opted_out,
                at,
            } => (
                if *opted_out {
                    "patient.opted_out"
                } else {
                    "patient.opted_in"
                },
                at,
                json!({"patient_ref": PATIENTS[*patient]}),
            ),
            Ev::SlotOpened {
                slot,
                provider,
                starts_at,
                duration_min,
                treatments,
                at,
            } => (
                "slot.opened",
                at,
                json!({
                    "slot_ref": SLOTS[*slot],
                    "provider_ref": PROVIDERS[*provider],
                    "starts_at": starts_at.to_string(),
                    "duration_min": duration_min,
                    "treatments": treatments.iter().map(|t| t.as_str()).collect::<Vec<_>>(),
                }),
            ),
            Ev::Rotated { patient, at } => (
                "patient.ref_rotated",
                at,
                json!({"old_ref": PATIENTS[*patient], "new_ref": PATIENTS[*patient + PEOPLE]}),
            ),
            Ev::Erased { patient, at } => (
                "patient.erased",
                at,
                json!({"patient_ref": PATIENTS[*patient]}),
            ),
        };
        json!({"type": ty, "occurred_at": at.to_string(), "data": data})
    }
}

// ---- generators ----

/// An instant up to `max_days` before now, on the hour (so that ties happen).
fn past(max_days: i64) -> impl Strategy<Value = Timestamp> {
    (0..=max_days * 24).prop_map(hours_before_now)
}

/// An `occurred_at`: mostly [`past`], sometimes up to 23 hours ahead of the receiver's clock
/// (accepted, and ranked at the receipt).
fn occurred(max_days: i64) -> impl Strategy<Value = Timestamp> {
    prop_oneof![
        6 => past(max_days),
        1 => (1i64..=23).prop_map(|h| hours_before_now(-h)),
    ]
}

/// A start from a month ago to three months ahead, on the hour; sometimes one of the
/// [`busy_start`]s slots open at.
fn start() -> impl Strategy<Value = Timestamp> {
    prop_oneof![
        3 => (-30i64 * 24..=90 * 24).prop_map(|h| hours_before_now(-h)),
        2 => busy_start(),
    ]
}

/// The few starts, ahead, at which slots are mostly reported open: bookings meet them.
fn busy_start() -> impl Strategy<Value = Timestamp> {
    prop::sample::select(vec![3i64, 9]).prop_map(|d| hours_before_now(-(d * 24 + 5)))
}

fn duration() -> impl Strategy<Value = u16> {
    prop::sample::select(vec![15u16, 30, 45, 60])
}

fn completion(patient: usize, treatment: Treatment) -> impl Strategy<Value = Ev> {
    (
        0..VISITS.len(),
        prop::option::weighted(
            0.35,
            (1u16..=6).prop_flat_map(|of| (1..=of).prop_map(move |i| (i, of))),
        ),
        prop::option::weighted(0.2, 20u16..=200),
        occurred(420),
    )
        .prop_map(move |(visit, series, cycle_days, at)| Ev::Completed {
            visit,
            patient,
            treatment,
            series,
            cycle_days,
            at,
        })
}

/// How one appointment ends, after its booking and reschedules.
#[derive(Debug, Clone, Copy)]
enum End {
    Open,
    Cancelled(bool),
    NoShow,
}

fn end() -> impl Strategy<Value = End> {
    prop_oneof![
        2 => Just(End::Open),
        1 => any::<bool>().prop_map(End::Cancelled),
        1 => Just(End::NoShow),
    ]
}

/// One appointment's events: a booking (sometimes lost), reschedules, an ending. Each event's
/// `occurred_at` is drawn independently: the PMS's clock is not ours to trust.
fn appointment(
    appt: usize,
    patient: usize,
    treatments: Vec<Treatment>,
) -> impl Strategy<Value = Vec<Ev>> {
    (
        any::<Index>(),
        prop::bool::weighted(0.85),
        0..PROVIDERS.len(),
        start(),
        duration(),
        occurred(60),
        prop::collection::vec((start(), duration(), occurred(60)), 0..=2),
        end(),
        occurred(60),
    )
        .prop_map(
            move |(t, booked, provider, starts_at, duration_min, at, moves, end, end_at)| {
                let mut evs = Vec::new();
                if booked {
                    evs.push(Ev::Booked {
                        appt,
                        patient,
                        treatment: *t.get(&treatments),
                        provider,
                        starts_at,
                        duration_min,
                        at,
                    });
                }
                for (starts_at, duration_min, at) in moves {
                    evs.push(Ev::Rescheduled {
                        appt,
                        starts_at,
                        duration_min,
                        at,
                    });
                }
                match end {
                    End::Open => {}
                    End::Cancelled(reopens_slot) => evs.push(Ev::Cancelled {
                        appt,
                        reopens_slot,
                        at: end_at,
                    }),
                    End::NoShow => evs.push(Ev::NoShow { appt, at: end_at }),
                }
                evs
            },
        )
}

/// What becomes of a patient's ref (docs/contracts.md, Erasure and rotation).
#[derive(Debug, Clone, Copy)]
enum Fate {
    Kept,
    /// Rotated to `PATIENTS[p + PEOPLE]`; each of the patient's events names the old ref or
    /// the new one (the PMS's retries and its new events).
    Rotated,
    Erased,
    /// Rotated, then erased under its new ref or (`false`) its old one.
    RotatedThenErased(bool),
}

fn fate() -> impl Strategy<Value = Fate> {
    prop_oneof![
        5 => Just(Fate::Kept),
        2 => Just(Fate::Rotated),
        1 => Just(Fate::Erased),
        1 => any::<bool>().prop_map(Fate::RotatedThenErased),
    ]
}

impl Ev {
    /// Names the patient's rotated-to ref instead of its first one.
    fn under_new_ref(&mut self) {
        match self {
            Ev::Completed { patient, .. }
            | Ev::Booked { patient, .. }
            | Ev::Consent { patient, .. } => *patient += PEOPLE,
            _ => {}
        }
    }
}

fn patient_history(patient: usize) -> impl Strategy<Value = Vec<Ev>> {
    let own = prop::collection::vec(prop::sample::select(TREATMENTS.to_vec()), 1..=2)
        .prop_flat_map(move |treatments| {
            let completions: Vec<_> = treatments
                .iter()
                .map(|t| prop::collection::vec(completion(patient, *t), 0..=3))
                .collect();
            let appointments: Vec<_> = (0..2)
                .map(|j| {
                    prop::option::weighted(
                        0.6,
                        appointment(patient * 2 + j, patient, treatments.clone()),
                    )
                })
                .collect();
            let change =
                (any::<bool>(), occurred(90)).prop_map(move |(opted_out, at)| Ev::Consent {
                    patient,
                    opted_out,
                    at,
                });
            // Most patients never change their consent.
            let consent = prop_oneof![
                2 => Just(Vec::new()),
                1 => prop::collection::vec(change, 1..=2),
            ];
            (completions, appointments, consent).prop_map(|(c, a, k)| {
                c.into_iter()
                    .flatten()
                    .chain(a.into_iter().flatten().flatten())
                    .chain(k)
                    .collect::<Vec<Ev>>()
            })
        });
    (own, fate(), any::<u64>(), occurred(90), occurred(90)).prop_map(
        move |(mut evs, fate, coins, rotated_at, erased_at)| {
            if let Fate::Rotated | Fate::RotatedThenErased(_) = fate {
                for (i, ev) in evs.iter_mut().enumerate() {
                    if coins >> (i % 64) & 1 == 1 {
                        ev.under_new_ref();
                    }
                }
                evs.push(Ev::Rotated {
                    patient,
                    at: rotated_at,
                });
            }
            let erased = match fate {
                Fate::Erased | Fate::RotatedThenErased(false) => Some(patient),
                Fate::RotatedThenErased(true) => Some(patient + PEOPLE),
                Fate::Kept | Fate::Rotated => None,
            };
            if let Some(patient) = erased {
                evs.push(Ev::Erased {
                    patient,
                    at: erased_at,
                });
            }
            evs
        },
    )
}

/// One slot reported open once or twice (a retry, or the PMS reporting it again). It starts
/// on the hour like the bookings, so a booking may take it, delivered before or after it.
fn slot_reports(slot: usize) -> impl Strategy<Value = Vec<Ev>> {
    (
        0..PROVIDERS.len(),
        // Mostly ahead (slot fill offers those), some already past or too close.
        prop_oneof![
            3 => busy_start(),
            1 => (2i64 * 24..=45 * 24).prop_map(|h| hours_before_now(-h)),
            1 => start(),
        ],
        duration(),
        prop::sample::subsequence(TREATMENTS.to_vec(), 1..=4),
        prop::collection::vec(occurred(30), 1..=2),
    )
        .prop_map(
            move |(provider, starts_at, duration_min, treatments, ats)| {
                ats.into_iter()
                    .map(|at| Ev::SlotOpened {
                        slot,
                        provider,
                        starts_at,
                        duration_min,
                        treatments: treatments.clone(),
                        at,
                    })
                    .collect()
            },
        )
}

fn history() -> impl Strategy<Value = Vec<Ev>> {
    (1..=PEOPLE, 0..=SLOTS.len())
        .prop_flat_map(|(n, k)| {
            (
                (0..n).map(patient_history).collect::<Vec<_>>(),
                (0..k).map(slot_reports).collect::<Vec<_>>(),
            )
        })
        .prop_map(|(per_patient, slots)| {
            per_patient
                .into_iter()
                .chain(slots)
                .flatten()
                .collect::<Vec<Ev>>()
        })
        .prop_filter("at least one event", |h| !h.is_empty())
}

/// The practice's policy: each kind's mode, the cooldown and the monthly cap.
#[derive(Debug, Clone)]
struct PolicyChoice {
    modes: Vec<Mode>,
    cooldown_days: u32,
    max_nudges: u32,
}

fn policy() -> impl Strategy<Value = PolicyChoice> {
    (
        prop::collection::vec(
            prop_oneof![4 => Just(Mode::Approve), 1 => Just(Mode::Auto), 1 => Just(Mode::Off)],
            ActionKind::ALL.len(),
        ),
        prop::sample::select(vec![0u32, 14]),
        prop::sample::select(vec![1u32, 2, 5]),
    )
        .prop_map(|(modes, cooldown_days, max_nudges)| PolicyChoice {
            modes,
            cooldown_days,
            max_nudges,
        })
}

/// One delivery of a history: every event at least once, some again, shuffled, in batches.
#[derive(Debug, Clone)]
struct Plan {
    order: Vec<usize>,
    batch_sizes: Vec<usize>,
    /// How many of `order`'s last entries are late retries.
    late: usize,
}

impl Plan {
    fn batches(&self) -> Vec<&[usize]> {
        let mut out = Vec::new();
        let mut rest = &self.order[..];
        for size in &self.batch_sizes {
            if rest.is_empty() {
                break;
            }
            let (b, r) = rest.split_at((*size).min(rest.len()));
            out.push(b);
            rest = r;
        }
        out
    }
}

/// Every event once, some again, shuffled; then up to three late retries (redeliveries of
/// earlier events after everything else, so after any erasure or rotation of their ref).
fn plan(n: usize) -> impl Strategy<Value = Plan> {
    (
        prop::collection::vec(0..n, 0..=n),
        prop::collection::vec(0..n, 0..=3),
    )
        .prop_flat_map(move |(dups, late)| {
            let order: Vec<usize> = (0..n).chain(dups).collect();
            let m = order.len() + late.len();
            (
                Just(order).prop_shuffle(),
                Just(late),
                prop::collection::vec(1usize..=12, m),
            )
        })
        .prop_map(|(mut order, late, batch_sizes)| {
            let n = late.len();
            order.extend(late);
            Plan {
                order,
                batch_sizes,
                late: n,
            }
        })
}

// ---- running ----

/// A practice onboarded in a fresh world, with its webhook secret in clear.
fn onboarded(now: Timestamp, choice: &PolicyChoice) -> (World, WebhookSecret) {
    let world = World::new(now);
    futures::executor::block_on(async {
        let done = admin::create_practice(
            &world.store,
            world.keys(),
            NewPractice {
                id: pid(),
                time_zone: "America/New_York".into(),
                owner_emails: vec!["owner@clinic.example".into()],
                trigger_url: "https://pms.example.com/triggers".parse().unwrap(),
            },
        )
        .await
        .unwrap();
        let mut p = world.store.get_practice(&pid()).await.unwrap().unwrap();
        let mut policy = Policy {
            cooldown_days: choice.cooldown_days,
            max_nudges_per_30_days: choice.max_nudges,
            ..Policy::default()
        };
        for (kind, mode) in ActionKind::ALL.iter().zip(&choice.modes) {
            policy.kinds.entry(*kind).or_default().mode = *mode;
        }
        p.policy = policy;
        let expected = p.version;
        p.version += 1;
        world.store.put_practice(&p, Some(expected)).await.unwrap();
        (world, WebhookSecret::parse(&done.webhook_secret).unwrap())
    })
}

/// Posts one signed body to the receiver, as the PMS would; it must be accepted.
async fn post(world: &World, secret: &WebhookSecret, n: usize, body: &Value) -> Accepted {
    let body = serde_json::to_vec(body).unwrap();
    let id = format!("msg_{n}");
    let ts = world.clock.now().as_second();
    let sig = secret.sign(&id, ts, &body).unwrap();
    let ts = ts.to_string();
    let res = receiver::receive(
        &world.receiver(),
        Delivery {
            practice_id: Some(PRACTICE),
            content_type: Some("application/json"),
            headers: SignedHeaders {
                id: Some(&id),
                timestamp: Some(&ts),
                signature: Some(&sig),
            },
            body: &body,
        },
    )
    .await;
    match res {
        Ok(accepted) => accepted,
        Err(e) => panic!("delivery {n} refused: {e:?}"),
    }
}

/// Delivers `events` by `plan`: one event alone as a bare body, several as `{"events": …}`.
async fn deliver(world: &World, secret: &WebhookSecret, events: &[Value], plan: &Plan) {
    for (n, batch) in plan.batches().into_iter().enumerate() {
        let body = match batch {
            [one] => events[*one].clone(),
            _ => json!({"events": batch.iter().map(|j| events[*j].clone()).collect::<Vec<_>>()}),
        };
        post(world, secret, n, &body).await;
    }
}

async fn scan(world: &World, day: Date) -> ScanReport {
    scan::scan_practice(&world.scan(), &pid(), day)
        .await
        .unwrap()
}

/// What a run leaves behind, minus what depends on how it was delivered (versions, and how
/// often a domain event was published).
#[derive(Debug, PartialEq)]
struct Outcome {
    entities: Vec<(String, Entity, Option<Date>)>,
    actions: Vec<Action>,
    reports: Vec<ScanReport>,
    fills: BTreeMap<String, SlotReport>,
    candidates: Vec<CandidateBatch>,
    published: BTreeSet<String>,
}

/// A record as the properties compare it: the appointment's start minute as kept, without
/// the appointment's version (see the module docs). Everything else is compared.
type Row = (String, Entity, Option<Date>, Option<u64>);

fn comparable(row: EntityRow) -> Row {
    match row.entity {
        Entity::Appointment(mut a) => {
            // Compared: the minute as kept (its register time may differ when a forget ran
            // against a different, equally old report).
            a.slot_start = a
                .start_minute()
                .map(|(t, at)| shared::state::Lww::new(Some(t), at));
            (row.sort_key, Entity::Appointment(a), row.due_on, None)
        }
        other => (row.sort_key, other, row.due_on, Some(row.version)),
    }
}

/// The store as property 2 compares it: records (with versions) and actions (with revisions).
fn stored(world: &World) -> (Vec<Row>, Vec<Action>) {
    (
        world
            .store
            .entities(&pid())
            .into_iter()
            .map(comparable)
            .collect(),
        world.store.actions(&pid()),
    )
}

fn outcome(
    world: &World,
    case: &Case,
    reports: Vec<ScanReport>,
    mut fills: BTreeMap<String, SlotReport>,
) -> Outcome {
    let erased = case.erased_appointments();
    // Slot fill for a slot reopened by an appointment erased since finds no slot.
    fills.retain(|key, report| {
        let gone = erased.iter().any(|a| key.ends_with(a));
        assert!(!gone || report.outcome == "no_slot", "{key}: {report:?}");
        !gone
    });
    Outcome {
        entities: world
            .store
            .entities(&pid())
            .into_iter()
            .map(|r| {
                // Versions count writes, which depend on how the history was batched.
                let (sk, e, due, _) = comparable(r);
                (sk, e, due)
            })
            .collect(),
        actions: world.store.actions(&pid()),
        reports,
        fills,
        candidates: world.bus.candidates(),
        published: world
            .bus
            .events()
            .iter()
            // A cancellation that reopens the slot of an appointment erased later is
            // published when it arrives before the erasure and dropped after it; slot fill
            // finds no slot either way (the appointment is gone).
            .filter(|e| !matches!(e, DomainEvent::SlotOpened { slot_ref, .. } if erased.contains(slot_ref.as_str())))
            // Hints that depend on the arrival order (see `fill_slots`).
            .filter(|e| !matches!(e, DomainEvent::SlotFilled { .. }))
            .map(|e| serde_json::to_string(e).unwrap())
            .collect(),
    }
}

/// Slot fill for every slot the deliveries reported open, and its withdrawal for every slot
/// a booking took, once each in a fixed order (as the bus's rules run them, late); slot
/// fill's reports by `fill <slot>`.
async fn fill_slots(world: &World) -> BTreeMap<String, SlotReport> {
    let mut opened = BTreeSet::new();
    let mut taken = BTreeSet::new();
    for e in world.bus.events() {
        match e {
            DomainEvent::SlotOpened { slot_ref, .. } => {
                opened.insert(slot_ref);
            }
            DomainEvent::SlotFilled {
                slot_ref,
                appointment_ref,
                ..
            } => {
                taken.insert((slot_ref, appointment_ref));
            }
            _ => {}
        }
    }
    let mut reports = BTreeMap::new();
    for slot in &opened {
        let r = slots::fill(&world.slots(), &pid(), slot).await.unwrap();
        reports.insert(format!("fill {}", slot.as_str()), r);
    }
    // Which `slot.filled` hints are published depends on the order a slot and its bookings
    // arrived in (each names the booking it saw); run after slot fill, which saw the final
    // state, each must change nothing.
    for (slot, by) in &taken {
        let before = stored(world);
        let r = slots::filled(&world.slots(), &pid(), slot, by.as_ref())
            .await
            .unwrap();
        assert!(
            ["filled", "not_taken", "no_slot"].contains(&r.outcome) && r.withdrawn == 0,
            "{slot:?} by {by:?}: {r:?}"
        );
        assert_eq!(stored(world), before, "slot.filled after slot fill wrote");
    }
    reports
}

/// Onboards the practice in a fresh world, delivers the history by `plan`, runs the scans
/// and then slot fill.
fn run_once(case: &Case, plan: &Plan) -> (World, WebhookSecret, Outcome) {
    run_lagged(case, plan, 0)
}

/// As [`run_once`], with the receiver's eventually consistent reads up to `lag` writes stale.
fn run_lagged(case: &Case, plan: &Plan, lag: usize) -> (World, WebhookSecret, Outcome) {
    let (world, secret) = onboarded(now(), &case.policy);
    world.store.lag_recent_reads(lag);
    let (reports, fills) = futures::executor::block_on(async {
        deliver(&world, &secret, &case.events(), plan).await;
        let mut reports = Vec::new();
        for day in case.scan_days() {
            reports.push(scan(&world, day).await);
        }
        let fills = fill_slots(&world).await;
        (reports, fills)
    });
    let out = outcome(&world, case, reports, fills);
    (world, secret, out)
}

/// What identifies a gap: kind, patient, treatment, and the date it opened (and for a slot
/// offer, the slot).
type GapKey = (ActionKind, OpaqueRef, Treatment, Date, Option<OpaqueRef>);

fn gap(a: &Action) -> GapKey {
    let slot = a.slot.as_ref().map(|s| s.slot_ref.clone());
    (
        a.kind,
        a.patient_ref.clone(),
        a.treatment,
        a.due_since,
        slot,
    )
}

/// One history, one policy, two deliveries of it, and how many nights before the scan date
/// the scans start (each night up to the scan date is scanned, in order).
#[derive(Debug, Clone)]
struct Case {
    history: Vec<Ev>,
    policy: PolicyChoice,
    one: Plan,
    two: Plan,
    nights_before: i64,
    /// How many writes the second delivery's eventually consistent reads may miss.
    lag: usize,
}

impl Case {
    fn events(&self) -> Vec<Value> {
        self.history.iter().map(Ev::json).collect()
    }

    /// Appointments whose patient is erased (by either of its refs) and whose booking the
    /// history has: the erasure takes them too.
    fn erased_appointments(&self) -> BTreeSet<&'static str> {
        let erased: BTreeSet<usize> = self
            .history
            .iter()
            .filter_map(|e| match e {
                Ev::Erased { patient, .. } => Some(patient % PEOPLE),
                _ => None,
            })
            .collect();
        self.history
            .iter()
            .filter_map(|e| match e {
                Ev::Booked { appt, patient, .. } if erased.contains(&(patient % PEOPLE)) => {
                    Some(APPOINTMENTS[*appt])
                }
                _ => None,
            })
            .collect()
    }

    /// Refs nothing may name afterwards: erased and rotated-away patient refs, and the
    /// appointments erasure took.
    fn gone(&self) -> BTreeSet<&'static str> {
        let mut gone = self.erased_appointments();
        for e in &self.history {
            match e {
                Ev::Rotated { patient, .. } => {
                    gone.insert(PATIENTS[*patient]);
                }
                Ev::Erased { patient, .. } => {
                    gone.insert(PATIENTS[patient % PEOPLE]);
                    gone.insert(PATIENTS[patient % PEOPLE + PEOPLE]);
                }
                _ => {}
            }
        }
        gone
    }

    fn scan_days(&self) -> Vec<Date> {
        (0..=self.nights_before)
            .rev()
            .map(|n| scan_day().checked_sub(jiff::Span::new().days(n)).unwrap())
            .collect()
    }
}

fn case() -> impl Strategy<Value = Case> {
    (history(), policy(), 0i64..=2).prop_flat_map(|(history, policy, nights_before)| {
        let n = history.len();
        (plan(n), plan(n), 0usize..=4).prop_map(move |(one, two, lag)| Case {
            history: history.clone(),
            policy: policy.clone(),
            one,
            two,
            nights_before,
            lag,
        })
    })
}

#[test]
fn the_refs_pass_the_guard() {
    for r in PATIENTS
        .iter()
        .chain(&SLOTS)
        .chain(&APPOINTMENTS)
        .chain(&VISITS)
        .chain(&PROVIDERS)
    {
        assert!(OpaqueRef::parse(r).is_ok(), "{r}");
    }
}

/// Delivers each body separately, returning how many records each changed.
fn deliver_each(world: &World, secret: &WebhookSecret, bodies: &[Value]) -> Vec<usize> {
    futures::executor::block_on(async {
        let mut changed = Vec::new();
        for (n, body) in bodies.iter().enumerate() {
            changed.push(post(world, secret, n, body).await.changed);
        }
        changed
    })
}

fn default_policy() -> PolicyChoice {
    PolicyChoice {
        modes: vec![Mode::Approve; ActionKind::ALL.len()],
        cooldown_days: 14,
        max_nudges: 2,
    }
}

fn ts(s: &str) -> Timestamp {
    s.parse().unwrap()
}

/// Found by property 2: a booking reported after its start keeps no minute, and delivering
/// it again wrote the record again (a new version, `changed: 1`) with nothing changed.
#[test]
fn a_redelivered_booking_reported_after_its_start_writes_nothing() {
    let (world, secret) = onboarded(now(), &default_policy());
    let booked = booked_with_provider(ts("2026-11-06T18:00:00Z"), ts("2026-11-08T12:00:00Z"));
    assert_eq!(
        deliver_each(&world, &secret, &[booked.clone(), booked]),
        vec![1, 0]
    );
    assert_eq!(world.store.entities(&pid())[0].version, 1);
}

/// Found by property 1 (fixed: the minute is a register whose forgetting keeps its time): a no-show forgets the appointment's start
/// minute even when it is older than the reschedule that set the minute, so the minute
/// survives or not depending on which of the two arrives first. Slot fill reads the minute
/// when a cancellation reopens the slot, so whether the slot was offered depended on arrival
/// order.
#[test]
fn a_stale_no_show_and_a_later_reschedule_commute() {
    let booked = booked_with_provider(ts("2026-11-04T15:00:00Z"), ts("2026-11-01T15:00:00Z"));
    // Missed on the 4th (reported on the 5th), then moved to December on the 10th.
    let resched = Ev::Rescheduled {
        appt: 0,
        starts_at: ts("2026-12-01T15:00:00Z"),
        duration_min: 30,
        at: ts("2026-11-10T15:00:00Z"),
    }
    .json();
    let no_show = Ev::NoShow {
        appt: 0,
        at: ts("2026-11-05T15:00:00Z"),
    }
    .json();
    // Then the appointment is cancelled, reopening its slot.
    let cancel = Ev::Cancelled {
        appt: 0,
        reopens_slot: true,
        at: ts("2026-11-12T15:00:00Z"),
    }
    .json();
    let run = |bodies: &[Value]| {
        let (world, secret) = onboarded(now(), &default_policy());
        deliver_each(&world, &secret, bodies);
        let minute = match &world.store.entities(&pid())[0].entity {
            Entity::Appointment(a) => a.slot_start.clone(),
            other => panic!("not an appointment: {other:?}"),
        };
        deliver_each(&world, &secret, std::slice::from_ref(&cancel));
        let slot = OpaqueRef::parse(APPOINTMENTS[0]).unwrap();
        let fill = futures::executor::block_on(slots::fill(&world.slots(), &pid(), &slot));
        (minute, fill.unwrap().outcome)
    };
    let first = run(&[booked.clone(), resched.clone(), no_show.clone()]);
    let second = run(&[booked, no_show, resched]);
    assert_eq!(
        first.0, second.0,
        "the start minute depends on arrival order"
    );
    assert_eq!(first.1, second.1, "slot fill depends on arrival order");
}

/// Found by property 1 (fixed), the other half of it: forgetting the minute
/// drops the register with its time, so a late delivery of an *older* booking fills it again.
/// Here the booking for 10 January is moved to 5 November, and a cancellation after that start
/// clears the minute; the original booking, delivered late, brings 10 January back, and slot
/// fill then offers a slot the appointment no longer holds.
#[test]
fn a_late_older_booking_does_not_bring_back_a_forgotten_minute() {
    let booked = booked_with_provider(ts("2027-01-10T15:00:00Z"), ts("2026-10-20T15:00:00Z"));
    let resched = Ev::Rescheduled {
        appt: 0,
        starts_at: ts("2026-11-05T15:00:00Z"),
        duration_min: 30,
        at: ts("2026-10-25T15:00:00Z"),
    }
    .json();
    let cancel = Ev::Cancelled {
        appt: 0,
        reopens_slot: true,
        at: ts("2026-11-06T15:00:00Z"),
    }
    .json();
    let run = |bodies: &[Value]| {
        let (world, secret) = onboarded(now(), &default_policy());
        deliver_each(&world, &secret, bodies);
        let minute = match &world.store.entities(&pid())[0].entity {
            Entity::Appointment(a) => a.slot_start.clone(),
            other => panic!("not an appointment: {other:?}"),
        };
        let slot = OpaqueRef::parse(APPOINTMENTS[0]).unwrap();
        let fill = futures::executor::block_on(slots::fill(&world.slots(), &pid(), &slot));
        (minute, fill.unwrap().outcome)
    };
    let in_order = run(&[booked.clone(), resched.clone(), cancel.clone()]);
    let late_booking = run(&[resched, cancel, booked]);
    assert_eq!(
        in_order.0, late_booking.0,
        "the start minute depends on arrival order"
    );
    assert_eq!(
        in_order.1, late_booking.1,
        "slot fill depends on arrival order"
    );
}

/// Time cannot be borrowed: an opt-in stamped 23 hours ahead is accepted, but a real opt-out
/// received after it wins, and redelivering the opt-in later (before or after its stamp)
/// changes nothing.
#[test]
fn an_opt_in_dated_ahead_does_not_outrank_a_later_opt_out() {
    let (world, secret) = onboarded(now(), &default_policy());
    let h = SignedDuration::from_hours;
    let opt_in = Ev::Consent {
        patient: 0,
        opted_out: false,
        at: now() + h(23),
    }
    .json();
    let opt_out = Ev::Consent {
        patient: 0,
        opted_out: true,
        at: now() + h(1),
    }
    .json();
    let opted_out = || {
        world
            .store
            .entities(&pid())
            .iter()
            .find_map(|r| match &r.entity {
                Entity::Consent(c) => Some(c.is_opted_out()),
                _ => None,
            })
            .unwrap()
    };
    assert_eq!(
        deliver_each(&world, &secret, std::slice::from_ref(&opt_in)),
        [1]
    );
    assert!(!opted_out());
    world.clock.set(now() + h(1));
    assert_eq!(
        deliver_each(&world, &secret, std::slice::from_ref(&opt_out)),
        [1]
    );
    assert!(opted_out(), "the later opt-out wins");
    let before = stored(&world);
    for later in [2, 23, 48] {
        world.clock.set(now() + h(later));
        let changed = deliver_each(&world, &secret, std::slice::from_ref(&opt_in));
        assert_eq!(changed, [0], "redelivered {later} h on");
        assert_eq!(stored(&world), before, "redelivered {later} h on");
    }
    // A new opt-in received later still counts.
    let back_in = Ev::Consent {
        patient: 0,
        opted_out: false,
        at: now() + h(49),
    }
    .json();
    world.clock.set(now() + h(49));
    assert_eq!(deliver_each(&world, &secret, &[back_in]), [1]);
    assert!(!opted_out());
}

/// `cases` cases (or `PROPTEST_CASES`); failures are kept next to this file.
fn config(cases: u32) -> ProptestConfig {
    ProptestConfig {
        cases: std::env::var("PROPTEST_CASES")
            .ok()
            .and_then(|c| c.parse().ok())
            .unwrap_or(cases),
        failure_persistence: Some(Box::new(FileFailurePersistence::Direct(
            "tests/disorder.proptest-regressions",
        ))),
        ..ProptestConfig::default()
    }
}

proptest! {
    #![proptest_config(config(96))]

    /// 1. The same events in any order, with any duplicates, in any batches, give the same
    ///    records, actions, scan reports and hand-overs; also when the receiver's eventually
    ///    consistent reads of the second delivery miss up to `case.lag` recent writes.
    #[test]
    fn any_order_and_any_duplicates_give_the_same_actions(case in case()) {
        let (_, _, one) = run_once(&case, &case.one);
        let (_, _, two) = run_lagged(&case, &case.two, case.lag);
        prop_assert_eq!(&one.entities, &two.entities, "stored records differ");
        prop_assert_eq!(&one.actions, &two.actions, "actions differ");
        prop_assert_eq!(&one.reports, &two.reports, "scan reports differ");
        prop_assert_eq!(&one.fills, &two.fills, "slot fill differs");
        prop_assert_eq!(&one.candidates, &two.candidates, "hand-overs differ");
        prop_assert_eq!(&one.published, &two.published, "published events differ");
        // Nothing stored names an erased ref, a rotated-away ref or an erased appointment.
        let text = serde_json::to_string(&(&one.entities, &one.actions)).unwrap();
        for gone in case.gone() {
            prop_assert!(!text.contains(gone), "{} survives", gone);
        }
    }
}

proptest! {
    #![proptest_config(config(64))]

    /// 2. A re-run of the scan for the same practice and date adds nothing and writes nothing:
    ///    right away, and after the whole history was delivered again (in another order, with
    ///    other duplicates).
    #[test]
    fn a_rerun_of_the_scan_adds_nothing(case in case()) {
        let (world, secret, first) = run_once(&case, &case.one);
        let snapshot = stored(&world);
        let rerun_adds_nothing = || async {
            for day in case.scan_days() {
                let rerun = scan(&world, day).await;
                prop_assert!(rerun.created.is_empty(), "re-run of {} created {:?}", day, rerun.created);
                prop_assert_eq!(rerun.handed_over, 0, "re-run of {} handed over", day);
                prop_assert_eq!(rerun.due_read, 0, "re-run of {} found something due", day);
            }
            prop_assert_eq!(&stored(&world), &snapshot, "a re-run changed the store");
            prop_assert_eq!(&world.bus.candidates(), &first.candidates);
            Ok(())
        };
        futures::executor::block_on(async {
            rerun_adds_nothing().await?;
            deliver(&world, &secret, &case.events(), &case.two).await;
            prop_assert_eq!(&stored(&world), &snapshot, "a redelivery changed the store");
            rerun_adds_nothing().await
        })?;
    }
}

proptest! {
    #![proptest_config(config(64))]

    /// 3. Action ids are deterministic: in two independent runs (fresh stores, other arrival
    ///    orders, a clock up to three days apart, scan dates up to three days apart), the same
    ///    gap gets the same id, and no two gaps share one.
    #[test]
    fn the_same_gap_gets_the_same_id_in_independent_runs(
        case in case(),
        later_hours in 0i64..=72,
        later_days in 0i64..=3,
    ) {
        let (_, _, one) = run_once(&case, &case.one);
        let (world, secret) = onboarded(now() + SignedDuration::from_hours(later_hours), &case.policy);
        let day = scan_day().checked_add(jiff::Span::new().days(later_days)).unwrap();
        futures::executor::block_on(async {
            deliver(&world, &secret, &case.events(), &case.two).await;
            scan(&world, day).await
        });
        let two = world.store.actions(&pid());
        let mut ids: BTreeMap<GapKey, BTreeSet<String>> = BTreeMap::new();
        let mut gaps: BTreeMap<String, BTreeSet<GapKey>> = BTreeMap::new();
        for act in one.actions.iter().chain(&two) {
            ids.entry(gap(act)).or_default().insert(act.id.to_string());
            gaps.entry(act.id.to_string()).or_default().insert(gap(act));
        }
        for (g, i) in &ids {
            prop_assert_eq!(i.len(), 1, "gap {:?} has ids {:?}", g, i);
        }
        for (i, g) in &gaps {
            prop_assert_eq!(g.len(), 1, "id {} names gaps {:?}", i, g);
        }
    }
}

/// Slot fill takes over a reopened appointment's slot and forgets the appointment's start
/// minute, keeping the register's time; a redelivered booking ranks at that same time, and
/// loses to the forget (a forgotten minute outranks a kept one reported at the same time), so
/// the redelivery writes nothing.
#[test]
fn a_redelivered_booking_after_slot_fill_writes_nothing() {
    let (world, secret) = onboarded(now(), &default_policy());
    let booked = booked_with_provider(ts("2026-12-10T15:00:00Z"), ts("2026-11-01T15:00:00Z"));
    let cancel = Ev::Cancelled {
        appt: 0,
        reopens_slot: true,
        at: ts("2026-11-12T15:00:00Z"),
    }
    .json();
    assert_eq!(
        deliver_each(&world, &secret, &[booked.clone(), cancel]),
        [1, 1]
    );
    let slot = OpaqueRef::parse(APPOINTMENTS[0]).unwrap();
    let fill = futures::executor::block_on(slots::fill(&world.slots(), &pid(), &slot)).unwrap();
    assert_eq!(fill.outcome, "no_candidates");
    let minute = |world: &World| match &world.store.entities(&pid())[0].entity {
        Entity::Appointment(a) => a.start_minute(),
        other => panic!("not an appointment: {other:?}"),
    };
    assert_eq!(minute(&world), None, "slot fill forgets the minute");
    let before = stored(&world);
    let changed = deliver_each(&world, &secret, &[booked]);
    assert_eq!(
        minute(&world),
        None,
        "a redelivered booking brought the minute back"
    );
    assert_eq!(changed, [0]);
    assert_eq!(stored(&world), before);
}

impl Ev {
    /// The patient (0..PEOPLE) an event is about, whichever of its refs it names.
    fn person(&self) -> Option<usize> {
        match self {
            Ev::Completed { patient, .. }
            | Ev::Booked { patient, .. }
            | Ev::Consent { patient, .. }
            | Ev::Rotated { patient, .. }
            | Ev::Erased { patient, .. } => Some(patient % PEOPLE),
            Ev::Rescheduled { appt, .. } | Ev::Cancelled { appt, .. } | Ev::NoShow { appt, .. } => {
                Some(appt / 2)
            }
            Ev::SlotOpened { .. } => None,
        }
    }

    fn is_privacy(&self) -> bool {
        matches!(self, Ev::Rotated { .. } | Ev::Erased { .. })
    }

    fn at(&self) -> Timestamp {
        match self {
            Ev::Completed { at, .. }
            | Ev::Booked { at, .. }
            | Ev::Rescheduled { at, .. }
            | Ev::Cancelled { at, .. }
            | Ev::NoShow { at, .. }
            | Ev::Consent { at, .. }
            | Ev::SlotOpened { at, .. }
            | Ev::Rotated { at, .. }
            | Ev::Erased { at, .. } => *at,
        }
    }
}

/// The generator reaches the cases the properties are about, often enough to matter: each
/// counted over 300 generated cases (a fixed seed), with the first delivery run for the
/// outcomes.
#[test]
fn the_histories_reach_every_kind_of_disorder() {
    use proptest::strategy::ValueTree;
    use proptest::test_runner::TestRunner;
    let mut runner = TestRunner::deterministic();
    let mut seen: BTreeMap<&str, usize> = BTreeMap::new();
    let strategy = case();
    for _ in 0..300 {
        let case = strategy.new_tree(&mut runner).unwrap().current();
        let h = &case.history;
        let mut count = |what, yes: bool| *seen.entry(what).or_default() += usize::from(yes);
        for ty in [
            "appointment.completed",
            "appointment.booked",
            "appointment.rescheduled",
            "appointment.cancelled",
            "appointment.no_show",
            "patient.opted_out",
            "patient.opted_in",
            "slot.opened",
            "patient.ref_rotated",
            "patient.erased",
        ] {
            count(ty, h.iter().any(|e| e.json()["type"] == ty));
        }
        count(
            "a privacy event dated ahead",
            h.iter().any(|e| e.is_privacy() && e.at() > now()),
        );
        // Whose ref changes, and where in the first delivery that happens.
        let changed: BTreeSet<usize> = h
            .iter()
            .filter(|e| e.is_privacy())
            .filter_map(Ev::person)
            .collect();
        let order = &case.one.order;
        let first_change = |p: usize| {
            order
                .iter()
                .position(|j| h[*j].is_privacy() && h[*j].person() == Some(p))
        };
        count(
            "an event delivered after its patient's erasure or rotation",
            order.iter().enumerate().any(|(i, j)| {
                let e = &h[*j];
                !e.is_privacy()
                    && e.person().is_some_and(|p| {
                        changed.contains(&p) && first_change(p).is_some_and(|f| f < i)
                    })
            }),
        );
        let late = &order[order.len() - case.one.late..];
        count(
            "a late retry about an erased or rotated patient",
            late.iter()
                .any(|j| h[*j].person().is_some_and(|p| changed.contains(&p))),
        );
        count(
            "an old ref's event after the rotation",
            order.iter().enumerate().any(|(i, j)| match &h[*j] {
                Ev::Completed { patient, .. }
                | Ev::Booked { patient, .. }
                | Ev::Consent { patient, .. } => {
                    *patient < PEOPLE
                        && h.iter()
                            .any(|e| matches!(e, Ev::Rotated { patient: q, .. } if q == patient))
                        && first_change(*patient).is_some_and(|f| f < i)
                }
                _ => false,
            }),
        );
        count(
            "a batch mixing a rotation or erasure with other events",
            case.one.batches().iter().any(|b| {
                b.iter().any(|j| h[*j].is_privacy()) && b.iter().any(|j| !h[*j].is_privacy())
            }),
        );
        // A booking at an open slot's provider and start, delivered before the slot's first
        // report or after it.
        let at = |i: usize| order.iter().position(|j| *j == i).unwrap();
        let meets = |before: bool| {
            h.iter().enumerate().any(|(b, e)| {
                h.iter().enumerate().any(|(o, f)| match (e, f) {
                    (
                        Ev::Booked {
                            provider: p,
                            starts_at: t,
                            ..
                        },
                        Ev::SlotOpened {
                            provider: q,
                            starts_at: u,
                            ..
                        },
                    ) => p == q && t == u && (at(b) < at(o)) == before,
                    _ => false,
                })
            })
        };
        count(
            "a booking that takes a slot, delivered before it",
            meets(true),
        );
        count(
            "a booking that takes a slot, delivered after it",
            meets(false),
        );
        let (_, _, out) = run_once(&case, &case.one);
        count(
            "slot fill found the slot taken",
            out.fills.values().any(|f| f.outcome == "filled"),
        );
        count(
            "slot fill made offers",
            out.fills.values().any(|f| !f.offers.is_empty()),
        );
        count("an action", !out.actions.is_empty());
    }
    for (what, n) in &seen {
        assert!(*n >= 10, "{what}: {n} of 300 cases\n{seen:#?}");
    }
}

/// A booking takes an open slot (same provider, same start), whichever of the two arrives
/// first: after the slot, the receiver publishes `slot.filled` for the booking; before it,
/// slot fill finds the booking.
#[test]
fn a_booking_that_arrives_before_its_slot_still_takes_it() {
    let starts_at = ts("2026-12-10T15:00:00Z");
    let opened = slot_opened(starts_at);
    let booked = booked_with_provider(starts_at, ts("2026-11-16T15:00:00Z"));
    // Whether the slot ends taken once slot fill and its withdrawal have run.
    let run = |bodies: &[Value]| {
        let (world, secret) = onboarded(now(), &default_policy());
        deliver_each(&world, &secret, bodies);
        futures::executor::block_on(fill_slots(&world));
        world
            .store
            .entities(&pid())
            .into_iter()
            .find_map(|r| match r.entity {
                Entity::Slot(s) => Some(s.filled),
                _ => None,
            })
            .unwrap()
    };
    assert!(run(&[opened.clone(), booked.clone()]), "taken in order");
    assert!(
        run(&[booked, opened]),
        "slot fill depends on arrival order: the slot stays open"
    );
}

/// A reschedule onto an open slot that arrives before the appointment's booking (which names
/// the provider) fills the slot once the booking arrives: the receiver reads where the merged
/// record holds, not only where the booking itself said.
#[test]
fn a_reschedule_onto_a_slot_before_its_booking_fills_the_slot() {
    let (world, secret) = onboarded(now(), &default_policy());
    let starts_at = ts("2026-12-10T15:00:00Z");
    let opened = slot_opened(starts_at);
    let moved = Ev::Rescheduled {
        appt: 0,
        starts_at,
        duration_min: 30,
        at: ts("2026-11-17T15:00:00Z"),
    }
    .json();
    let booked = booked_with_provider(ts("2026-12-08T15:00:00Z"), ts("2026-11-16T15:00:00Z"));
    let filled = |world: &World| {
        world
            .bus
            .events()
            .into_iter()
            .filter(|e| matches!(e, DomainEvent::SlotFilled { .. }))
            .count()
    };
    deliver_each(&world, &secret, &[opened, moved]);
    assert_eq!(filled(&world), 0, "the reschedule names no provider");
    deliver_each(&world, &secret, &[booked]);
    assert_eq!(filled(&world), 1, "the booking completes where it holds");
}

/// Slot 0 with provider 0 at `starts_at` for neurotoxin, reported open on Nov 15.
fn slot_opened(starts_at: Timestamp) -> Value {
    Ev::SlotOpened {
        slot: 0,
        provider: 0,
        starts_at,
        duration_min: 30,
        treatments: vec![Treatment::Neurotoxin],
        at: ts("2026-11-15T15:00:00Z"),
    }
    .json()
}

/// Patient 0's neurotoxin appointment 0 with provider 0 at `starts_at`, booked `at`.
fn booked_with_provider(starts_at: Timestamp, at: Timestamp) -> Value {
    Ev::Booked {
        appt: 0,
        patient: 0,
        treatment: Treatment::Neurotoxin,
        provider: 0,
        starts_at,
        duration_min: 30,
        at,
    }
    .json()
}
